//! `ordo notices`: the durable journal, as a table for people or JSON lines.

use std::process::ExitCode;

use anyhow::{bail, Context};
use ordo_runtime::now_ms;
use ordo_store::journal::{JournalEntry, JournalFilter, JOURNAL_KINDS};
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

/// `at_ms` as UTC `YYYY-MM-DD HH:MM:SS`.
fn utc(at_ms: u64) -> String {
    let seconds = at_ms / 1000;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The entry's detail in a few words.
fn summary(entry: &JournalEntry) -> String {
    let d = &entry.detail;
    let text = |key: &str| d[key].as_str().unwrap_or_default().to_string();
    match entry.kind {
        "late-after-merge" if d["redirected"] == true => {
            format!("applied to merge target `{}`", text("target"))
        }
        "late-after-merge" => format!(
            "applied to its source before the merge; folded into `{}`",
            text("target")
        ),
        "stalled" => format!(
            "missing version {} (version {} waits)",
            d["missing"], d["waiting"]
        ),
        "dead-lettered" => format!("entry {} ({}): {}", d["id"], text("kind"), text("reason")),
        "conflict" => text("detail"),
        "released" => format!(
            "went on after waiting {} s for its dependency",
            d["waited_ms"].as_u64().unwrap_or_default() / 1000
        ),
        "stale" => format!(
            "event `{}` skipped: its version is held or passed",
            text("id")
        ),
        "operator" => format!(
            "{}{} by {}: {}{}",
            text("verb"),
            d["args"]["id"]
                .as_u64()
                .map(|id| format!(" entry {id}"))
                .unwrap_or_default(),
            text("user"),
            text("result"),
            match text("reason") {
                reason if reason.is_empty() => String::new(),
                reason => format!(" (reason: {reason})"),
            }
        ),
        _ => d.to_string(),
    }
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
