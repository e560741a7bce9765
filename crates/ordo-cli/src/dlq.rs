//! `ordo dlq list|replay|skip` and `ordo parked list`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ordo_core::{DeadLetter, Engine, WaitsFor};
use ordo_runtime::operator::Action;
use ordo_runtime::{now_ms, Consumer};
use ordo_store::{ActionState, OperatorAction, Store};
use serde_json::json;

use crate::cli::{ListArgs, ParkedListArgs, ParkedSkipArgs, ReplayArgs, SkipArgs};
use crate::settings::{engine_config, open_read_only, open_store};

/// The checkpoint key operator verbs use: they deliver nothing, so they write none.
const OPERATOR_SOURCE: &str = "ordo:operator";

fn entry_json(entry: &DeadLetter) -> serde_json::Value {
    json!({
        "id": entry.id,
        "stream": entry.stream.as_deref(),
        "version": entry.version,
        "event_id": entry.event_id.as_deref(),
        "kind": entry.kind.name(),
        "reason": entry.reason,
        "partition": entry.position.map(|p| p.partition),
        "offset": entry.position.map(|p| p.offset),
        "first_seen_ms": entry.at_ms,
        "body": entry.body,
    })
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_read_only(&args.store)?;
    let entries = store.dead_letters()?;
    if args.json {
        for entry in &entries {
            outln!("{}", entry_json(entry));
        }
    } else if entries.is_empty() {
        outln!("the dead-letter queue is empty");
    } else {
        outln!(
            "{:>6}  {:<10}  {:<28}  {:>8}  {:<20}  {:<9}  reason",
            "id",
            "kind",
            "stream",
            "version",
            "event id",
            "age"
        );
        let now = now_ms();
        for entry in &entries {
            outln!(
                "{:>6}  {:<10}  {:<28}  {:>8}  {:<20}  {:<9}  {}",
                entry.id,
                entry.kind.name(),
                entry.stream.as_deref().unwrap_or("-"),
                entry.version.map_or("-".to_string(), |v| v.to_string()),
                entry.event_id.as_deref().unwrap_or("-"),
                age(now.saturating_sub(entry.at_ms)),
                entry.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration for people: `42s`, `17m`, `5h`, `3d`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn parse_rate(rate: &str) -> anyhow::Result<f64> {
    let number = rate.strip_suffix("/s").unwrap_or(rate);
    let per_second: f64 = number
        .parse()
        .with_context(|| format!("--rate `{rate}` is not N or N/s"))?;
    if !(per_second > 0.0 && per_second.is_finite()) {
        bail!("--rate must be positive");
    }
    Ok(per_second)
}

fn select(entries: Vec<DeadLetter>, ids: &[u64]) -> anyhow::Result<Vec<DeadLetter>> {
    if ids.is_empty() {
        return Ok(entries);
    }
    let mut selected = Vec::new();
    for id in ids {
        match entries.iter().find(|e| e.id == *id) {
            Some(entry) => selected.push(entry.clone()),
            None => bail!("no dead letter with id {id}"),
        }
    }
    Ok(selected)
}

/// The engine settings and the handler an operator verb restores: the ones the last
/// `run` recorded.
fn operator_config(
    args: &crate::cli::EngineArgs,
    store: &mut ordo_store::AnyStore,
) -> anyhow::Result<(ordo_core::Config, Option<crate::handler::HandlerSettings>)> {
    let mut config = engine_config(args, store)?;
    let handler = crate::handler::recorded(store)?;
    crate::handler::adapt_config(&mut config, handler.as_ref());
    Ok((config, handler))
}

/// A consumer for an operator verb: what it unblocks goes to the recorded handler, if any.
fn operator_consumer(
    store: ordo_store::AnyStore,
    config: ordo_core::Config,
    handler: Option<crate::handler::HandlerSettings>,
) -> anyhow::Result<Consumer<ordo_store::AnyStore>> {
    let consumer = Consumer::open(store, OPERATOR_SOURCE, config)?;
    Ok(match handler {
        Some(settings) => consumer.with_handlers(crate::handler::start(&settings)?),
        None => consumer,
    })
}

/// How long a verb waits for the running `ordo run` to take a request up and record its
/// outcome (it looks every `OPERATOR_RECHECK_MS`; a replay may wait for handler calls).
const REQUEST_WAIT_MS: u64 = 30_000;

/// Where an operator verb's actions are carried out.
pub(crate) enum Operator {
    /// By this process: nobody holds the store (or it is PostgreSQL, whose running
    /// members notice the change and rebuild).
    Here(Box<Consumer<ordo_store::AnyStore>>),
    /// By the `ordo run` holding this SQLite store: the verb leaves requests and waits.
    Requested {
        store: ordo_store::AnyStore,
        holder: String,
        pid: u32,
    },
}

impl Operator {
    pub(crate) fn open(
        store_url: &str,
        engine: &crate::cli::EngineArgs,
        verb: &str,
    ) -> anyhow::Result<Self> {
        let mut store = open_store(store_url, false)?;
        match store.acquire_lease(verb) {
            Ok(()) => {}
            Err(ordo_store::OpenError::LeaseHeld { holder, pid }) => {
                return Ok(Operator::Requested { store, holder, pid })
            }
            Err(e) => return Err(e.into()),
        }
        let (config, handler) = operator_config(engine, &mut store)?;
        Ok(Operator::Here(Box::new(operator_consumer(
            store, config, handler,
        )?)))
    }

    fn dead_letters(&mut self) -> anyhow::Result<Vec<DeadLetter>> {
        Ok(match self {
            Operator::Here(consumer) => consumer.store().dead_letters()?,
            Operator::Requested { store, .. } => store.dead_letters()?,
        })
    }

    /// Carries `action` out here, or has the running consumer do it; its record.
    pub(crate) fn act(&mut self, action: &Action, reason: &str) -> anyhow::Result<OperatorAction> {
        match self {
            Operator::Here(consumer) => {
                let record = consumer.perform(action, action.request(reason))?;
                consumer.commit()?;
                Ok(record)
            }
            Operator::Requested { store, holder, pid } => {
                let sqlite = store.as_sqlite().expect("only SQLite stores are leased");
                let id = sqlite.request_action(&action.request(reason))?;
                let deadline = Instant::now() + Duration::from_millis(REQUEST_WAIT_MS);
                loop {
                    let record = sqlite.action(id)?.context("the request row vanished")?;
                    if record.state != ActionState::Pending {
                        return Ok(record);
                    }
                    if Instant::now() >= deadline {
                        let why = format!(
                            "withdrawn: `{holder}` (pid {pid}) did not take it up within {} s",
                            REQUEST_WAIT_MS / 1000
                        );
                        // Withdrawn, so that it cannot run hours later, after the operator
                        // moved on; unless the run took it up at the last moment.
                        if sqlite.withdraw_action(id, &why)? {
                            bail!("{why}; nothing was done");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn counters(&mut self) -> anyhow::Result<ordo_core::Counters> {
        Ok(match self {
            Operator::Here(consumer) => consumer.counters(),
            Operator::Requested { store, .. } => store.counters()?,
        })
    }
}

/// `result` of a replay's record, with what it means.
fn replay_status(record: &OperatorAction) -> (&str, String) {
    match (record.state, record.result.as_str()) {
        (ActionState::Done, "already-applied") => {
            ("already-applied", "version guard: a counted no-op".into())
        }
        (ActionState::Done, "dead-lettered-again") => {
            ("dead-lettered-again", "refused again; see dlq list".into())
        }
        (ActionState::Done, status) => (status, String::new()),
        (_, refusal) => ("refused", refusal.to_string()),
    }
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let per_second = parse_rate(&args.rate)?;
    let body = match &args.body {
        Some(path) => {
            if args.ids.len() != 1 {
                bail!("--body replaces one entry's event: give exactly one --id");
            }
            Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --body {}", path.display()))?,
            )
        }
        None => None,
    };
    if args.dry_run {
        return replay_dry_run(&args, body.as_deref());
    }
    let mut operator = Operator::open(&args.store, &args.engine, "ordo dlq replay")?;
    let entries = select(operator.dead_letters()?, &args.ids)?;
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let started = Instant::now();
    let mut failures = 0;
    for (index, entry) in entries.iter().enumerate() {
        // Rate limit: entry i goes no earlier than i / rate seconds after the start.
        let due = started + interval.mul_f64(index as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let action = Action::Replay {
            id: entry.id,
            body: body.clone(),
        };
        let record = operator.act(&action, &args.reason)?;
        let (status, detail) = replay_status(&record);
        if matches!(status, "refused" | "dead-lettered-again") {
            failures += 1;
        }
        if args.json {
            outln!(
                "{}",
                json!({"id": entry.id, "stream": entry.stream.as_deref(), "version": entry.version, "event_id": entry.event_id.as_deref(), "result": status, "reason": detail, "action": record.id})
            );
        } else {
            outln!(
                "dead letter {}: {status}{}",
                entry.id,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            );
        }
    }
    eprintln!("ordo: counters now: {}", operator.counters()?);
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `dlq replay --dry-run`: what each replay would do, from the store alone.
fn replay_dry_run(args: &ReplayArgs, body: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut store = open_read_only(&args.store)?;
    let handler = crate::handler::recorded(&mut store)?.is_some();
    let queue = store.dead_letters()?;
    let entries = select(queue.clone(), &args.ids)?;
    if entries.is_empty() && !args.json {
        outln!("the dead-letter queue is empty: nothing to replay");
    }
    let forecasts = ordo_runtime::replay_forecast::forecast_in_order(
        &mut store, &entries, body, &queue, handler,
    )?;
    for (entry, (forecast, after)) in entries.iter().zip(forecasts) {
        let detail = match after {
            Some(earlier) => {
                format!("{forecast} once dead letter {earlier}, replayed before it, has")
            }
            None => forecast.to_string(),
        };
        if args.json {
            outln!(
                "{}",
                json!({"id": entry.id, "stream": entry.stream.as_deref(), "version": entry.version, "event_id": entry.event_id.as_deref(), "would": forecast.outcome(), "detail": detail, "after": after})
            );
        } else {
            outln!("dead letter {} (dry run): {detail}", entry.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn skip(args: SkipArgs) -> anyhow::Result<ExitCode> {
    let mut operator = Operator::open(&args.store, &args.engine, "ordo dlq skip")?;
    let entries = select(operator.dead_letters()?, &args.ids)?;
    let mut failures = 0;
    for entry in &entries {
        let record = operator.act(&Action::Skip { id: entry.id }, &args.reason)?;
        if record.state == ActionState::Done {
            outln!("dead letter {}: skipped", entry.id);
        } else {
            failures += 1;
            outln!("dead letter {}: refused ({})", entry.id, record.result);
        }
    }
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What holds a waiting event, as JSON.
fn waits_for_json(waits_for: &WaitsFor) -> serde_json::Value {
    match waits_for {
        WaitsFor::Gap { version, stalled } => {
            json!({"kind": "gap", "version": version, "stalled": stalled})
        }
        WaitsFor::Dependency { stream, version } => {
            json!({"kind": "dependency", "stream": &**stream, "version": version})
        }
        WaitsFor::DeadLetter { id } => json!({"kind": "dead-letter", "id": id}),
        WaitsFor::Merge { stream, version } => {
            json!({"kind": "merge", "stream": &**stream, "version": version})
        }
        WaitsFor::Paused => json!({"kind": "paused"}),
        WaitsFor::Nothing => json!({"kind": "nothing"}),
    }
}

/// The summary line's group of a waiting event: what is awaited, in words.
fn awaited(waits_for: &WaitsFor) -> String {
    match waits_for {
        WaitsFor::Gap { stalled: true, .. } => "a missing version (stalled)".into(),
        WaitsFor::Gap { .. } => "a missing version".into(),
        WaitsFor::Dependency { stream, .. } => format!("`{stream}` (after)"),
        WaitsFor::DeadLetter { .. } => "a dead letter".into(),
        WaitsFor::Merge { stream, .. } => format!("the merge at `{stream}`"),
        WaitsFor::Paused => "an operator's `ordo resume` (paused)".into(),
        WaitsFor::Nothing => "nothing (goes next)".into(),
    }
}

pub fn parked(args: ParkedListArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_read_only(&args.store)?;
    let mut waiting = waiting_now(&mut store)?;
    if let Some(stream) = &args.stream {
        waiting.retain(|w| &*w.stream == stream.as_str());
    }
    let listed = if args.limit == 0 {
        &waiting[..]
    } else {
        &waiting[..args.limit.min(waiting.len())]
    };
    if args.json {
        for event in listed {
            outln!(
                "{}",
                json!({"event_id": event.id.as_deref(), "id": event.id.as_deref(), "stream": &*event.stream, "version": event.version, "reason": event.reason, "waits_for": waits_for_json(&event.waits_for)})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if waiting.is_empty() {
        outln!("nothing is waiting");
        return Ok(ExitCode::SUCCESS);
    }
    print_waiting_summary(&waiting);
    for event in listed {
        outln!(
            "{} v{} ({}): {}",
            event.stream,
            event.version,
            event.id.as_deref().unwrap_or("-"),
            event.reason
        );
    }
    if listed.len() < waiting.len() {
        outln!("… {} more (--limit)", waiting.len() - listed.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Every waiting event as the engine restored from the store sees it, pauses included
/// and spilled streams brought back.
fn waiting_now(store: &mut ordo_store::AnyStore) -> anyhow::Result<Vec<ordo_core::WaitingEvent>> {
    let (config, _) = operator_config(
        &crate::cli::EngineArgs {
            gap_timeout_ms: None,
            monotonic: Vec::new(),
            dedupe_window_ids: None,
            stream_pending_events_max: None,
        },
        store,
    )?;
    let mut engine = Engine::restore(config, store.snapshot(OPERATOR_SOURCE)?, now_ms());
    for pause in store.pauses()? {
        if let ordo_store::PauseTarget::Stream(stream) = pause.target {
            engine.pause(&stream);
        }
    }
    // Parked streams stay in the store after a restore (spilled): bring them back to list.
    engine.request_all_spilled();
    while let Some(load) = engine.poll_load() {
        let loaded = store.load_pending(&load)?;
        engine.handle_loaded(now_ms(), &load, loaded);
    }
    Ok(engine.waiting())
}

/// The summary: by what is awaited, the most events first.
fn print_waiting_summary(waiting: &[ordo_core::WaitingEvent]) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut groups: BTreeMap<String, (BTreeSet<&str>, usize)> = BTreeMap::new();
    for event in waiting {
        let group = groups.entry(awaited(&event.waits_for)).or_default();
        group.0.insert(&event.stream);
        group.1 += 1;
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    let streams: BTreeSet<&str> = waiting.iter().map(|w| &*w.stream).collect();
    outln!(
        "{} events wait in {} streams; by what they wait for:",
        waiting.len(),
        streams.len()
    );
    for (what, (streams, events)) in &groups {
        outln!(
            "  {events:>8} events in {:>6} streams: {what}",
            streams.len()
        );
    }
    outln!();
}

/// `ordo parked skip`: passes one missing version known lost, with the operator's reason.
pub fn parked_skip(args: ParkedSkipArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        bail!(
            "--reason must say why version {} is known lost",
            args.version
        );
    }
    let mut operator = Operator::open(&args.store, &args.engine, "ordo parked skip")?;
    let before = operator.counters()?.applied;
    let action = Action::SkipMissing {
        stream: args.stream.clone(),
        version: args.version,
    };
    let record = operator.act(&action, &args.reason)?;
    if record.state == ActionState::Done {
        let released = operator.counters()?.applied.saturating_sub(before);
        outln!(
            "`{}` version {}: skipped ({}, by {}); {released} events applied behind it",
            args.stream,
            args.version,
            args.reason,
            record.user
        );
        Ok(ExitCode::SUCCESS)
    } else {
        outln!(
            "`{}` version {}: refused ({})",
            args.stream,
            args.version,
            record.result
        );
        Ok(ExitCode::from(1))
    }
}
