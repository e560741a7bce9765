//! `ordo status`: one screen of what the store says about the consumer writing it, with
//! the source's lag where the source can be reached from the store alone (the embedded
//! log). Read-only: aggregate queries, no engine rebuilt.

use std::process::ExitCode;

use ordo_runtime::log_lag as lag;
use ordo_runtime::now_ms;
use ordo_store::StoreStatus;
use serde_json::Value;

use crate::cli::StatusArgs;
use crate::settings::open_read_only;

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_read_only(&args.store)?;
    let status = store.status()?;
    let now = now_ms();
    let kafka = match &args.source {
        Some(source) => Some(kafka_ends(source)?),
        None => None,
    };
    let lags: Vec<Option<u64>> = status
        .positions
        .iter()
        .map(|position| match &kafka {
            Some((key, ends)) if &position.source == key => ends
                .iter()
                .find(|end| end.partition == position.partition)
                .map(|end| end.caught_up_at.saturating_sub(position.offset)),
            _ => lag(position),
        })
        .collect();
    if args.json {
        let mut json = status.to_json(now);
        if let Some(Value::Array(positions)) = json.get_mut("positions") {
            for (position, lag) in positions.iter_mut().zip(&lags) {
                position["lag_events"] = (*lag).into();
            }
        }
        outln!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    print_human(&status, &lags, now);
    Ok(ExitCode::SUCCESS)
}

/// The checkpoint key `run` records for a Kafka source, and its partitions' ends.
fn kafka_ends(
    source: &str,
) -> anyhow::Result<(String, Vec<ordo_runtime::telemetry::PartitionEnd>)> {
    let url = ordo_kafka::KafkaUrl::parse(source).map_err(anyhow::Error::msg)?;
    // As `ordo run` keys positions: the topic and the group, not a broker address.
    let key = format!(
        "kafka:{}?group={}",
        url.topic,
        url.group.clone().unwrap_or_default()
    );
    let ends = ordo_kafka::partition_ends(&url).map_err(anyhow::Error::msg)?;
    Ok((key, ends))
}

fn age(now: u64, at: Option<u64>) -> String {
    match at {
        None => "-".into(),
        Some(at) => {
            let s = now.saturating_sub(at) / 1000;
            match s {
                0..=119 => format!("{s}s"),
                120..=7199 => format!("{}m", s / 60),
                7200..=172_799 => format!("{}h", s / 3600),
                _ => format!("{}d", s / 86_400),
            }
        }
    }
}

fn print_human(status: &StoreStatus, lags: &[Option<u64>], now: u64) {
    outln!("counters     {}", status.counters);
    outln!("last commit  {} ago", age(now, status.last_commit_ms()));
    outln!("positions");
    if status.positions.is_empty() {
        outln!("  (none recorded yet)");
    }
    for (p, lag) in status.positions.iter().zip(lags) {
        let lag = lag.map_or("lag unknown (source not readable from here)".into(), |l| {
            format!("lag {l} events")
        });
        outln!(
            "  {} partition {}: offset {}, {lag}, recorded {} ago",
            p.source,
            p.partition,
            p.offset,
            age(now, p.committed_ms)
        );
    }
    outln!(
        "waiting      {} events ({} in their stream's line, {} on a dependency), oldest {}",
        status.waiting(),
        status.buffered,
        status.parked,
        age(now, status.oldest_waiting_ms)
    );
    outln!("stalled      {} streams", status.counters.stalled);
    outln!(
        "dead letters {}, oldest {}",
        status.dead_letters,
        age(now, status.oldest_dead_letter_ms)
    );
    for pause in &status.pauses {
        outln!(
            "paused       {} by {} {} ago: {} (`ordo resume` lets it go)",
            pause.target,
            pause.user,
            age(now, Some(pause.since_ms)),
            pause.reason
        );
    }
    if status.longest_waiting.is_empty() {
        return;
    }
    outln!("longest waiting");
    for w in &status.longest_waiting {
        outln!(
            "  {:<24} {:>6} events for {:>4}, waits for {}",
            w.stream,
            w.events,
            age(now, w.since_ms),
            w.blocker
        );
    }
    outln!("(`ordo parked list --store …` lists every waiting event)");
}
