//! The durable journal (`ordo notices`): what ordo noticed, written in the commit that
//! carries what it is about, and what is kept of it (bounded by count and by age).

use crate::ReadError;

/// Most journal entries kept by default; older ones are deleted at commit.
pub const JOURNAL_ENTRIES_MAX_DEFAULT: u64 = 1_000_000;

/// Oldest journal entry kept by default (30 days).
pub const JOURNAL_AGE_MS_MAX_DEFAULT: u64 = 30 * 24 * 3_600 * 1_000;

/// What the journal keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Most entries kept.
    pub entries_max: u64,
    /// Oldest entry kept, in ms.
    pub age_ms_max: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            entries_max: JOURNAL_ENTRIES_MAX_DEFAULT,
            age_ms_max: JOURNAL_AGE_MS_MAX_DEFAULT,
        }
    }
}

/// The kinds of entry, as stored and as `--kind` takes them.
pub const JOURNAL_KINDS: [&str; 7] = [
    "late-after-merge",
    "stale",
    "stalled",
    "dead-lettered",
    "conflict",
    "released",
    "operator",
];

/// One journal entry.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalEntry {
    /// Its number (0 before it is written).
    pub id: u64,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// One of [`JOURNAL_KINDS`].
    pub kind: &'static str,
    /// The stream it is about, when one.
    pub stream: Option<String>,
    /// The version it is about, when one.
    pub version: Option<u64>,
    /// The rest, for people and scripts.
    pub detail: serde_json::Value,
}

/// Which entries to read.
#[derive(Clone, Debug, Default)]
pub struct JournalFilter {
    /// Only this stream's.
    pub stream: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only from this time on (ms since the epoch).
    pub since_ms: Option<u64>,
    /// At most this many, the newest (0: no limit).
    pub limit: u64,
}

/// The columns every journal query selects, in [`entry_from_row`]'s order.
pub(crate) const JOURNAL_COLUMNS: &str = "id, at_ms, kind, stream, version, detail";

/// One stored row back into an entry.
pub(crate) fn entry_from_row(
    id: i64,
    at_ms: i64,
    kind: String,
    stream: Option<String>,
    version: Option<i64>,
    detail: String,
) -> Result<JournalEntry, ReadError> {
    let kind = JOURNAL_KINDS
        .iter()
        .find(|k| **k == kind)
        .ok_or_else(|| ReadError::Corrupt(format!("journal entry {id}: unknown kind `{kind}`")))?;
    Ok(JournalEntry {
        id: id as u64,
        at_ms: at_ms as u64,
        kind,
        stream,
        version: version.map(|v| v as u64),
        detail: serde_json::from_str(&detail)
            .map_err(|_| ReadError::Corrupt(format!("journal entry {id}: detail is not JSON")))?,
    })
}

/// The entry that records an operator action carried out or refused.
pub(crate) fn operator_entry(action: &crate::OperatorAction) -> JournalEntry {
    let args = &action.args;
    JournalEntry {
        id: 0,
        at_ms: action.done_ms.unwrap_or(action.requested_ms),
        kind: "operator",
        stream: args["stream"].as_str().map(String::from),
        version: args["version"].as_u64(),
        detail: serde_json::json!({
            "verb": action.verb,
            "args": args,
            "user": action.user,
            "reason": action.reason,
            "state": action.state.name(),
            "result": action.result,
            "action": action.id,
        }),
    }
}

/// The query for `filter`, with `$n`-style or `?n`-style placeholders (`dollar`), and its
/// parameters in order: stream, kind, since, limit (those present).
pub(crate) fn filter_sql(filter: &JournalFilter, dollar: bool) -> String {
    let mut clauses = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        if dollar {
            format!("${n}")
        } else {
            format!("?{n}")
        }
    };
    if filter.stream.is_some() {
        clauses.push(format!("stream = {}", next()));
    }
    if filter.kind.is_some() {
        clauses.push(format!("kind = {}", next()));
    }
    if filter.since_ms.is_some() {
        clauses.push(format!("at_ms >= {}", next()));
    }
    let condition = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let limit = if filter.limit > 0 {
        format!("LIMIT {}", next())
    } else {
        String::new()
    };
    format!(
        "SELECT {JOURNAL_COLUMNS} FROM (SELECT {JOURNAL_COLUMNS} FROM journal {condition}
         ORDER BY id DESC {limit}) AS newest ORDER BY id"
    )
}

/// `at_ms` as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn utc(at_ms: u64) -> String {
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

/// The entry's detail in a few words, as `ordo notices` and the console print it.
pub fn summary(entry: &JournalEntry) -> String {
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
            match (d["args"]["id"].as_u64(), d["args"]["partition"].as_u64()) {
                (Some(id), _) => format!(" entry {id}"),
                (None, Some(partition)) => format!(" partition {partition}"),
                (None, None) => String::new(),
            },
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

/// The time the journal's age retention counts from: the committer's clock.
pub(crate) fn journal_now(batch: &crate::CommitBatch) -> u64 {
    if batch.now_ms > 0 {
        batch.now_ms
    } else {
        crate::now_ms()
    }
}
