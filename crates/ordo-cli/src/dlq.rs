//! `ordo dlq list|replay|skip` and `ordo parked list`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ordo_core::{DeadLetter, Engine, ReplayOutcome};
use ordo_runtime::{now_ms, Consumer};
use ordo_store::Store;
use serde_json::json;

use crate::cli::{ListArgs, ParkedSkipArgs, ReplayArgs, SkipArgs};
use crate::settings::{engine_config, open_store};

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
        "body": entry.body,
    })
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_store(&args.store, false)?;
    let entries = store.dead_letters()?;
    if args.json {
        for entry in &entries {
            outln!("{}", entry_json(entry));
        }
    } else if entries.is_empty() {
        outln!("the dead-letter queue is empty");
    } else {
        outln!(
            "{:>6}  {:<10}  {:<28}  {:>8}  reason",
            "id",
            "kind",
            "stream",
            "version"
        );
        for entry in &entries {
            outln!(
                "{:>6}  {:<10}  {:<28}  {:>8}  {}",
                entry.id,
                entry.kind.name(),
                entry.stream.as_deref().unwrap_or("-"),
                entry.version.map_or("-".to_string(), |v| v.to_string()),
                entry.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let per_second = parse_rate(&args.rate)?;
    let mut store = open_store(&args.store, false)?;
    store.acquire_lease("ordo dlq replay")?;
    let (config, handler) = operator_config(&args.engine, &mut store)?;
    let entries = select(store.dead_letters()?, &args.ids)?;
    let mut consumer = operator_consumer(store, config, handler)?;
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let started = Instant::now();
    let mut failures = 0;
    for (index, entry) in entries.iter().enumerate() {
        // Rate limit: entry i goes no earlier than i / rate seconds after the start.
        let due = started + interval.mul_f64(index as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let result = consumer.replay(entry);
        consumer.commit()?;
        let (status, detail) = match &result {
            Ok(ReplayOutcome::Requeued) => ("requeued", String::new()),
            Ok(ReplayOutcome::AlreadyApplied) => {
                ("already-applied", "version guard: a counted no-op".into())
            }
            Ok(ReplayOutcome::DeadLetteredAgain) => ("dead-lettered-again", "see dlq list".into()),
            Err(reason) => {
                failures += 1;
                ("refused", reason.clone())
            }
        };
        if args.json {
            outln!(
                "{}",
                json!({"id": entry.id, "stream": entry.stream.as_deref(), "version": entry.version, "result": status, "reason": detail})
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
    eprintln!("ordo: counters now: {}", consumer.counters());
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn skip(args: SkipArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_store(&args.store, false)?;
    store.acquire_lease("ordo dlq skip")?;
    let (config, handler) = operator_config(&args.engine, &mut store)?;
    let entries = select(store.dead_letters()?, &args.ids)?;
    let mut consumer = operator_consumer(store, config, handler)?;
    let mut failures = 0;
    for entry in &entries {
        match consumer.skip(entry) {
            Ok(()) => outln!("dead letter {}: skipped", entry.id),
            Err(reason) => {
                failures += 1;
                outln!("dead letter {}: refused ({reason})", entry.id);
            }
        }
        consumer.commit()?;
    }
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn parked(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_store(&args.store, false)?;
    let (config, _) = operator_config(
        &crate::cli::EngineArgs {
            gap_timeout_ms: None,
            monotonic: Vec::new(),
            dedupe_window: None,
            stream_pending_max: None,
        },
        &mut store,
    )?;
    let mut engine = Engine::restore(config, store.snapshot(OPERATOR_SOURCE)?, now_ms());
    // Parked streams stay in the store after a restore (spilled): bring them back to list.
    engine.request_all_spilled();
    while let Some(load) = engine.poll_load() {
        let loaded = store.load_pending(&load)?;
        engine.handle_loaded(now_ms(), &load, loaded);
    }
    let waiting = engine.waiting();
    if args.json {
        for event in &waiting {
            outln!(
                "{}",
                json!({"id": event.id.as_deref(), "stream": &*event.stream, "version": event.version, "reason": event.reason})
            );
        }
    } else if waiting.is_empty() {
        outln!("nothing is waiting");
    } else {
        for event in &waiting {
            outln!(
                "{} v{} ({}): {}",
                event.stream,
                event.version,
                event.id.as_deref().unwrap_or("-"),
                event.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ordo parked skip`: passes one missing version known lost, with the operator's reason.
pub fn parked_skip(args: ParkedSkipArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        bail!(
            "--reason must say why version {} is known lost",
            args.version
        );
    }
    let mut store = open_store(&args.store, false)?;
    store.acquire_lease("ordo parked skip")?;
    let (config, handler) = operator_config(&args.engine, &mut store)?;
    let mut consumer = operator_consumer(store, config, handler)?;
    let before = consumer.counters().applied;
    let result = consumer.skip_missing(&args.stream, args.version);
    consumer.commit()?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    match result {
        Ok(()) => {
            let released = consumer.counters().applied - before;
            tracing::info!(
                stream = %args.stream,
                version = args.version,
                reason = %args.reason,
                %user,
                "operator skipped a missing version"
            );
            outln!(
                "`{}` version {}: skipped ({}, by {user}); {released} events applied behind it",
                args.stream,
                args.version,
                args.reason
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            outln!(
                "`{}` version {}: refused ({reason})",
                args.stream,
                args.version
            );
            Ok(ExitCode::from(1))
        }
    }
}
