//! `ordo notices`: the durable journal, as a table for people or JSON lines.

use std::process::ExitCode;

use anyhow::{bail, Context};
use ordo_runtime::now_ms;
use ordo_store::journal::{summary, utc, JournalFilter, JOURNAL_KINDS};
use serde_json::json;

use crate::cli::NoticesArgs;
use crate::settings::open_read_only;

/// `--since T`: `90s`, `15m`, `2h`, `3d` back from now, or ms since the epoch.
fn since_ms(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    let units: [(&str, u64); 4] = [
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];
    for (suffix, ms) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            let count: u64 = number
                .parse()
                .with_context(|| format!("--since `{text}`: expected N{suffix}"))?;
            return Ok(now_ms.saturating_sub(count.saturating_mul(ms)));
        }
    }
    text.parse().with_context(|| {
        format!("--since `{text}` is neither a duration (90s, 15m, 2h, 3d) nor ms since the epoch")
    })
}

pub fn run(args: NoticesArgs) -> anyhow::Result<ExitCode> {
    if let Some(kind) = &args.kind {
        if !JOURNAL_KINDS.contains(&kind.as_str()) {
            bail!("--kind `{kind}` is not one of {}", JOURNAL_KINDS.join(", "));
        }
    }
    let filter = JournalFilter {
        stream: args.stream.clone(),
        kind: args.kind.clone(),
        since_ms: args
            .since
            .as_deref()
            .map(|t| since_ms(t, now_ms()))
            .transpose()?,
        limit: args.limit,
    };
    let mut store = open_read_only(&args.store)?;
    let entries = store.journal(&filter)?;
    if args.json {
        for entry in &entries {
            outln!(
                "{}",
                json!({"id": entry.id, "at_ms": entry.at_ms, "kind": entry.kind, "stream": entry.stream, "version": entry.version, "detail": entry.detail})
            );
        }
    } else if entries.is_empty() {
        outln!("no notices");
    } else {
        outln!(
            "{:<19}  {:<16}  {:<24}  {:>7}  what",
            "when (UTC)",
            "kind",
            "stream",
            "version"
        );
        for entry in &entries {
            outln!(
                "{:<19}  {:<16}  {:<24}  {:>7}  {}",
                utc(entry.at_ms),
                entry.kind,
                entry.stream.as_deref().unwrap_or("-"),
                entry.version.map_or("-".into(), |v| v.to_string()),
                summary(entry)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_and_since_durations() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_798_761_600_000), "2027-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000 + 3_661_000), "2000-02-29 01:01:01");
        assert_eq!(since_ms("90s", 100_000).unwrap(), 10_000);
        assert_eq!(since_ms("2h", 10_000_000).unwrap(), 2_800_000);
        assert_eq!(since_ms("12345", 0).unwrap(), 12_345);
        assert!(since_ms("yesterday", 0).is_err());
    }
}
