//! Each page, as HTML from what [`crate::reads`] read. Pure functions of their data and
//! the time, so a page can be checked without a server.

use ordo_core::{DeadLetter, PendingState};
use ordo_projection::Document;
use ordo_store::journal::{summary, utc, JournalEntry};
use ordo_store::status::Blocker;
use ordo_store::StoreStatus;

use crate::html::{age, escape, page, path_segment, stream_link, table};
use crate::reads::{redact, StreamView};

/// Filters of the dead-letter page (query parameters; empty means any).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct DeadLetterFilter {
    /// `sequenced`, `unroutable`, `overflow`, `conflict`.
    #[serde(default)]
    pub kind: String,
    /// The stream, exactly.
    #[serde(default)]
    pub stream: String,
    /// Words of the reason.
    #[serde(default)]
    pub reason: String,
    /// The event's `type`.
    #[serde(default, rename = "type")]
    pub event_type: String,
    /// At least this many minutes old (a browser sends the empty field as `""`).
    #[serde(default)]
    pub older_than_min: String,
    /// Which page of [`DEAD_LETTER_PAGE_ROWS`] entries (from 0).
    #[serde(default)]
    pub page: usize,
}

/// Entries one page of the dead-letter list shows.
pub const DEAD_LETTER_PAGE_ROWS: usize = 100;

/// Links to the previous and next pages, keeping the filter.
fn pager(filter: &DeadLetterFilter, page_index: usize, pages: usize) -> String {
    let link = |index: usize, text: &str| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("kind", &filter.kind)
            .append_pair("stream", &filter.stream)
            .append_pair("reason", &filter.reason)
            .append_pair("type", &filter.event_type)
            .append_pair("older_than_min", &filter.older_than_min)
            .append_pair("page", &index.to_string())
            .finish();
        format!("<a href=\"/dead-letters?{}\">{text}</a>", escape(&query))
    };
    let mut links = Vec::new();
    if page_index > 0 {
        links.push(link(page_index - 1, "← previous page"));
    }
    if page_index + 1 < pages {
        links.push(link(page_index + 1, "next page →"));
    }
    if links.is_empty() {
        return String::new();
    }
    format!(
        "<nav aria-label=\"Pages of entries\"><p>{}</p></nav>",
        links.join(" · ")
    )
}

/// A reason (or any text quoting a payload: a dry run's verdict, a journal summary) with
/// redacted fields kept out: reasons quote payload values next to their field's name
/// (`incr: `email` must be …, got "…"`), so a text that names a redacted field is not
/// shown at all.
pub fn redact_reason(reason: &str, fields: &[String]) -> String {
    match fields
        .iter()
        .find(|f| !f.is_empty() && reason.contains(f.as_str()))
    {
        Some(field) => format!("[hidden: it names the redacted field `{field}`]"),
        None => reason.to_string(),
    }
}

impl DeadLetterFilter {
    fn admits(&self, entry: &DeadLetter, now_ms: u64) -> bool {
        let event_type = serde_json::from_str::<serde_json::Value>(&entry.body)
            .ok()
            .and_then(|v| v["type"].as_str().map(String::from))
            .unwrap_or_default();
        (self.kind.is_empty() || entry.kind.name() == self.kind)
            && (self.stream.is_empty() || entry.stream.as_deref() == Some(self.stream.as_str()))
            && (self.reason.is_empty() || entry.reason.contains(&self.reason))
            && (self.event_type.is_empty() || event_type == self.event_type)
            && self
                .older_than_min
                .trim()
                .parse::<u64>()
                .ok()
                .is_none_or(|min| now_ms.saturating_sub(entry.at_ms) >= min.saturating_mul(60_000))
    }
}

/// `/`: health, positions, counters, what waits, what is dead-lettered.
pub fn overview(
    status: &StoreStatus,
    history: &crate::history::History,
    runs: &[crate::runs::RunHealth],
    csrf: &str,
    now_ms: u64,
) -> String {
    let mut body = health_line(status, now_ms);
    body.push_str(&pauses(&status.pauses, csrf, now_ms));
    body.push_str(&running(runs));
    body.push_str(&positions_table(status, now_ms));
    body.push_str(&counters_table(status, history));
    body.push_str(&waiting_table("Waiting longest", status, now_ms));
    body.push_str(&pause_partition_form(csrf));
    page("Overview", &body)
}

/// The one line an operator reads first: last commit, waiting, stalled, dead letters.
fn health_line(status: &StoreStatus, now_ms: u64) -> String {
    format!(
        "<p>Last commit <strong>{} ago</strong> · {} events waiting (oldest {}) · \
         <span class=\"{}\">{} streams stalled</span> · \
         <a href=\"/dead-letters\">{} dead letters</a> (oldest {})</p>",
        age(now_ms, status.last_commit_ms()),
        status.waiting(),
        age(now_ms, status.oldest_waiting_ms),
        if status.counters.stalled > 0 {
            "bad"
        } else {
            "ok"
        },
        status.counters.stalled,
        status.dead_letters,
        age(now_ms, status.oldest_dead_letter_ms),
    )
}

/// Each source partition's recorded position and, for the event log, its lag.
fn positions_table(status: &StoreStatus, now_ms: u64) -> String {
    let positions: Vec<Vec<String>> = status
        .positions
        .iter()
        .map(|p| {
            vec![
                escape(&p.source),
                format!("<span class=\"num\">{}</span>", p.partition),
                format!("<span class=\"num\">{}</span>", p.offset),
                ordo_runtime::log_lag(p).map_or_else(
                    || "unknown here".into(),
                    |lag| format!("<span class=\"num\">{lag}</span>"),
                ),
                age(now_ms, p.committed_ms),
            ]
        })
        .collect();
    table(
        "Positions",
        &[
            "source",
            "partition",
            "offset (last settled)",
            "lag (events)",
            "recorded",
        ],
        &positions,
    )
}

/// The run counters with their recent rate and an hour's sparkline.
fn counters_table(status: &StoreStatus, history: &crate::history::History) -> String {
    let counters: Vec<Vec<String>> = status
        .counters
        .fields()
        .iter()
        .map(|(name, value)| {
            let rate = history
                .rate_per_min(name)
                .map_or("–".into(), |r| format!("{r:.1}"));
            vec![
                escape(name),
                format!("<span class=\"num\">{value}</span>"),
                format!("<span class=\"num\">{rate}</span>"),
                crate::history::sparkline(
                    &history.increases(name),
                    &format!("{name}: events per sample over the last hour"),
                ),
            ]
        })
        .collect();
    table(
        "Decisions (the run counters)",
        &["decision", "events", "per minute (last 5 min)", "last hour"],
        &counters,
    )
}

/// What the running consumers' endpoints said: heartbeat, readiness, lag.
fn running(runs: &[crate::runs::RunHealth]) -> String {
    if runs.is_empty() {
        return "<p>Heartbeat and broker lag: give the console each run's metrics endpoint \
                (<code>--run-metrics http://127.0.0.1:9464</code>).</p>"
            .into();
    }
    let number = |v: Option<f64>, unit: &str| {
        v.map_or("–".into(), |v| {
            format!(
                "<span class=\"num\">{}{unit}</span>",
                (v * 10.0).round() / 10.0
            )
        })
    };
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let state = match (&run.error, run.ready, run.heartbeat_age_seconds) {
                (Some(error), _, _) => {
                    format!("<span class=\"bad\">unreachable: {}</span>", escape(error))
                }
                (None, _, Some(age)) if age > HEARTBEAT_STALE_S => {
                    format!("<span class=\"bad\">loop stuck for {age:.0} s</span>")
                }
                (None, true, _) => "<span class=\"ok\">ready</span>".into(),
                (None, false, _) => "<span class=\"bad\">not ready</span>".into(),
            };
            let lag: Vec<String> = run
                .lag
                .iter()
                .map(|l| {
                    format!(
                        "partition {}: {} events, {}",
                        escape(&l.partition),
                        number(l.events, ""),
                        number(l.seconds, " s")
                    )
                })
                .collect();
            vec![
                escape(&run.endpoint),
                state,
                number(run.heartbeat_age_seconds, " s ago"),
                if lag.is_empty() {
                    "–".into()
                } else {
                    lag.join("<br>")
                },
            ]
        })
        .collect();
    table(
        "Running consumers (from their metrics endpoints)",
        &["endpoint", "state", "loop heartbeat", "lag per partition"],
        &rows,
    )
}

/// A loop that has not turned for this long is called stuck (the alert rule's figure).
const HEARTBEAT_STALE_S: f64 = 60.0;

/// The pauses in force, each with its resume form.
fn pauses(pauses: &[ordo_store::Pause], csrf: &str, now_ms: u64) -> String {
    if pauses.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = pauses
        .iter()
        .map(|p| {
            let (what, action) = match &p.target {
                ordo_store::PauseTarget::Stream(stream) => (
                    format!("stream {}", stream_link(stream)),
                    format!("{}/resume", stream_href(stream)),
                ),
                ordo_store::PauseTarget::Partition(partition) => (
                    format!("partition {partition}"),
                    format!("/partitions/{partition}/resume"),
                ),
            };
            vec![
                what,
                escape(&p.user),
                age(now_ms, Some(p.since_ms)),
                escape(&p.reason),
                reason_form(&action, csrf, "Resume", "Reason for the resume"),
            ]
        })
        .collect();
    format!(
        "<div class=\"bad\" role=\"status\">{} paused</div>{}",
        pauses.len(),
        table(
            "Paused by operators",
            &["what", "by", "for", "why", "resume"],
            &rows
        )
    )
}

/// A form that posts one action with a required reason.
fn reason_form(action: &str, csrf: &str, button: &str, label: &str) -> String {
    format!(
        "<form class=\"act\" method=\"post\" action=\"{}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>{} (kept with the action)<input name=\"reason\" required size=\"40\"></label>\
         <button type=\"submit\">{}</button></form>",
        escape(action),
        escape(csrf),
        escape(label),
        escape(button),
    )
}

/// Pausing a source partition: reading it stops until it is resumed.
fn pause_partition_form(csrf: &str) -> String {
    format!(
        "<h2>Pause a partition</h2><p>Stops reading one source partition (its events wait \
         in the broker, lag grows); what was read already is applied. The same as \
         <code>ordo pause --partition N</code>.</p>\
         <form class=\"act\" method=\"post\" action=\"/partitions/pause\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>Partition<input name=\"partition\" type=\"number\" min=\"0\" required></label>\
         <label>Reason for the pause (kept with the action)<input name=\"reason\" required size=\"40\"></label>\
         <button type=\"submit\">Pause the partition</button></form>",
        escape(csrf)
    )
}

/// What holds a stream, in words, with a link where there is somewhere to go.
fn blocker(blocker: &Blocker) -> String {
    match blocker {
        Blocker::DeadLetter { id, .. } => format!(
            "{} — <a href=\"/dead-letters/{id}\">see the entry</a>",
            escape(&blocker.to_string())
        ),
        Blocker::Stream { stream, version } => {
            format!("{} to reach version {version}", stream_link(stream))
        }
        Blocker::Gap { .. } | Blocker::Paused => escape(&blocker.to_string()),
    }
}

fn waiting_table(caption: &str, status: &StoreStatus, now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = status
        .longest_waiting
        .iter()
        .map(|w| {
            vec![
                stream_link(&w.stream),
                format!("<span class=\"num\">{}</span>", w.events),
                age(now_ms, w.since_ms),
                format!("<span class=\"num\">{}</span>", w.applied),
                blocker(&w.blocker),
            ]
        })
        .collect();
    table(
        caption,
        &[
            "stream",
            "events",
            "waiting for",
            "applied version",
            "waits for",
        ],
        &rows,
    )
}

/// The group a waiting stream falls in on the Waiting page: what it awaits.
fn awaited(blocker: &Blocker) -> String {
    match blocker {
        Blocker::Gap { .. } => "a missing version".into(),
        Blocker::DeadLetter { .. } => "a dead letter of its own".into(),
        Blocker::Stream { stream, version } => format!("`{stream}` to reach version {version}"),
        Blocker::Paused => "an operator's resume (paused)".into(),
    }
}

/// `/waiting`: waiting streams grouped by what they await, with a search by stream key.
pub fn waiting(status: &StoreStatus, search: &str, now_ms: u64) -> String {
    let mut body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/waiting\">\
         <label>Stream contains<input name=\"stream\" value=\"{}\"></label>\
         <button type=\"submit\">Search</button></form>",
        escape(search)
    );
    let mut groups: std::collections::BTreeMap<String, Vec<&ordo_store::status::WaitingStream>> =
        std::collections::BTreeMap::new();
    for w in status
        .longest_waiting
        .iter()
        .filter(|w| search.is_empty() || w.stream.contains(search))
    {
        groups.entry(awaited(&w.blocker)).or_default().push(w);
    }
    if groups.is_empty() {
        body.push_str("<p>Nothing is waiting.</p>");
    }
    for (what, streams) in groups {
        let rows: Vec<Vec<String>> = streams
            .iter()
            .map(|w| {
                vec![
                    stream_link(&w.stream),
                    format!("<span class=\"num\">{}</span>", w.events),
                    age(now_ms, w.since_ms),
                    blocker(&w.blocker),
                ]
            })
            .collect();
        body.push_str(&table(
            &format!("Waiting for {what} ({} streams)", streams.len()),
            &["stream", "events", "waiting for", "waits for"],
            &rows,
        ));
    }
    page("Waiting", &body)
}

/// `/dead-letters`: the queue, filtered.
pub fn dead_letters(
    entries: &[DeadLetter],
    filter: &DeadLetterFilter,
    fields: &[String],
    now_ms: u64,
) -> String {
    let mut body = filter_form(filter);
    let admitted: Vec<&DeadLetter> = entries
        .iter()
        .filter(|e| filter.admits(e, now_ms))
        .collect();
    let pages = admitted.len().div_ceil(DEAD_LETTER_PAGE_ROWS).max(1);
    let page_index = filter.page.min(pages - 1);
    let shown = admitted
        .iter()
        .skip(page_index * DEAD_LETTER_PAGE_ROWS)
        .take(DEAD_LETTER_PAGE_ROWS);
    let rows: Vec<Vec<String>> = shown.map(|e| dead_letter_row(e, fields, now_ms)).collect();
    body.push_str(&dry_run_forms(&admitted));
    body.push_str(&table(
        &format!(
            "{} entries (page {} of {pages})",
            admitted.len(),
            page_index + 1
        ),
        &[
            "select",
            "entry",
            "kind",
            "stream",
            "version",
            "event id",
            "first seen",
            "reason",
        ],
        &rows,
    ));
    body.push_str(&pager(filter, page_index, pages));
    page("Dead letters", &body)
}

/// The filters of the dead-letter page, filled in as they stand.
fn filter_form(filter: &DeadLetterFilter) -> String {
    let field = |label: &str, name: &str, value: &str| {
        format!(
            "<label>{label}<input name=\"{name}\" value=\"{}\"></label>",
            escape(value)
        )
    };
    format!(
        "<form class=\"filters\" method=\"get\" action=\"/dead-letters\">{}{}{}{}{}\
         <button type=\"submit\">Filter</button></form>",
        field("Kind", "kind", &filter.kind),
        field("Stream", "stream", &filter.stream),
        field("Reason contains", "reason", &filter.reason),
        field("Event type", "type", &filter.event_type),
        field(
            "Older than (minutes)",
            "older_than_min",
            &filter.older_than_min
        ),
    )
}

/// One entry of the dead-letter table, with its selection box.
fn dead_letter_row(e: &DeadLetter, fields: &[String], now_ms: u64) -> Vec<String> {
    vec![
        format!(
            "<label class=\"pick\"><input type=\"checkbox\" name=\"id\" value=\"{0}\" \
             form=\"selection\"><span>select #{0}</span></label>",
            e.id
        ),
        format!("<a href=\"/dead-letters/{0}\">#{0}</a>", e.id),
        escape(e.kind.name()),
        e.stream.as_deref().map(stream_link).unwrap_or_default(),
        e.version.map(|v| v.to_string()).unwrap_or_default(),
        escape(e.event_id.as_deref().unwrap_or_default()),
        age(now_ms, Some(e.at_ms)),
        escape(&redact_reason(&e.reason, fields)),
    ]
}

/// The dry-run buttons: of the selected entries, and of every entry the filter admits on
/// any page ("all of a stream" is a filter by stream, then this).
fn dry_run_forms(admitted: &[&DeadLetter]) -> String {
    let all_ids: String = admitted
        .iter()
        .take(crate::actions::SELECTION_MAX)
        .map(|e| format!("<input type=\"hidden\" name=\"id\" value=\"{}\">", e.id))
        .collect();
    format!(
        "<form id=\"selection\" class=\"filters\" method=\"post\" action=\"/dead-letters/dry-run\">\
         <button type=\"submit\">Dry run of the selected</button></form>\
         <form class=\"filters\" method=\"post\" action=\"/dead-letters/dry-run\">{all_ids}\
         <button type=\"submit\">Dry run of all {} entries shown by the filter</button></form>",
        admitted.len().min(crate::actions::SELECTION_MAX)
    )
}

/// The event body, parsed when it parses, with `fields` redacted.
fn payload(body: &str, fields: &[String]) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(value) => {
            escape(&serde_json::to_string_pretty(&redact(&value, fields)).unwrap_or_default())
        }
        // Not JSON (why it was dead-lettered): shown as received, nothing to redact by name.
        Err(_) => escape(body),
    }
}

/// `/dead-letters/{id}`: one entry and its payload.
pub fn dead_letter(
    entry: &DeadLetter,
    forecast: &ordo_runtime::replay_forecast::Forecast,
    fields: &[String],
    csrf: &str,
    now_ms: u64,
) -> String {
    let mut body = format!(
        "<p><strong>{}</strong> entry, first seen {} ago{}</p><p>Reason: {}</p>",
        escape(entry.kind.name()),
        age(now_ms, Some(entry.at_ms)),
        entry
            .position
            .map(|p| format!(", read at partition {} offset {}", p.partition, p.offset))
            .unwrap_or_default(),
        escape(&redact_reason(&entry.reason, fields)),
    );
    if let Some(stream) = &entry.stream {
        body.push_str(&format!(
            "<p>Stream {} version {}</p>",
            stream_link(stream),
            entry.version.map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    body.push_str(&format!(
        "<h2>Payload</h2><pre>{}</pre><h2>If replayed now (dry run)</h2><p data-would=\"{}\">{}</p>",
        payload(&entry.body, fields),
        forecast.outcome(),
        escape(&redact_reason(&forecast.to_string(), fields)),
    ));
    body.push_str(&action_forms(entry.id, csrf));
    body.push_str(&format!(
        "<p>The same from the command line: <code>ordo dlq replay --store STORE --id {0} --dry-run</code>, then <code>ordo dlq replay --store STORE --id {0} [--body fixed.json] --reason TEXT</code>, or <code>ordo dlq skip --store STORE --id {0} --reason TEXT</code>.</p>",
        entry.id
    ));
    page(&format!("Dead letter #{}", entry.id), &body)
}

/// The dry run of a selection: what each replay would do, then the form that replays
/// them for real at a chosen rate.
pub fn selection_dry_run(
    forecasts: &[crate::reads::SelectedForecast],
    per_second: u32,
    fields: &[String],
    csrf: &str,
) -> String {
    let rows: Vec<Vec<String>> = forecasts
        .iter()
        .map(|f| {
            let (stream, version) = f
                .entry
                .as_ref()
                .map_or((String::new(), String::new()), |e| {
                    (
                        e.stream.as_deref().map(stream_link).unwrap_or_default(),
                        e.version.map(|v| v.to_string()).unwrap_or_default(),
                    )
                });
            let (would, detail) = match (&f.forecast, f.after) {
                (None, _) => ("gone".to_string(), "no longer in the queue".to_string()),
                (Some(forecast), Some(after)) => (
                    forecast.outcome().to_string(),
                    format!("would apply once #{after}, earlier in this selection, has"),
                ),
                (Some(forecast), None) => (forecast.outcome().to_string(), forecast.to_string()),
            };
            vec![
                format!("<a href=\"/dead-letters/{0}\">#{0}</a>", f.id),
                stream,
                version,
                format!("<span data-would=\"{0}\">{0}</span>", escape(&would)),
                escape(&redact_reason(&detail, fields)),
            ]
        })
        .collect();
    let ids: String = forecasts
        .iter()
        .filter(|f| f.entry.is_some())
        .map(|f| format!("<input type=\"hidden\" name=\"id\" value=\"{}\">", f.id))
        .collect();
    let body = format!(
        "<p>Nothing has changed yet. Replays go in entry order; each is version-guarded.</p>{}\
         <form class=\"act\" method=\"post\" action=\"/dead-letters/replay\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{ids}\
         <label>Rate (replays per second, 1 to {})<input name=\"rate\" type=\"number\" min=\"1\" max=\"{}\" value=\"{per_second}\" required></label>\
         <label>Reason for the replay (kept with each action)<input name=\"reason\" required size=\"60\"></label>\
         <button type=\"submit\">Replay these {} entries</button></form>\
         <p>The same from the command line: <code>ordo dlq replay --store STORE {} --rate {per_second}/s --reason TEXT</code> (add <code>--dry-run</code> to see this table).</p>",
        table(
            &format!("Dry run of {} entries", forecasts.len()),
            &["entry", "stream", "version", "would", "why"],
            &rows
        ),
        escape(csrf),
        crate::actions::REPLAY_RATE_MAX,
        crate::actions::REPLAY_RATE_MAX,
        forecasts.iter().filter(|f| f.entry.is_some()).count(),
        forecasts
            .iter()
            .filter(|f| f.entry.is_some())
            .map(|f| format!("--id {}", f.id))
            .collect::<Vec<_>>()
            .join(" "),
    );
    page("Replay a selection: dry run", &body)
}

/// The replay and skip forms of a dead letter: each needs a reason (kept with the action).
fn action_forms(id: u64, csrf: &str) -> String {
    let csrf = escape(csrf);
    format!(
        "<h2>Act</h2>\
         <form class=\"act\" method=\"post\" action=\"/dead-letters/{id}/replay\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Reason for the replay (kept with the action)<input name=\"reason\" required size=\"60\"></label>\
         <label>Corrected event (optional: same stream and version, any id)\
         <textarea name=\"body\" rows=\"6\" cols=\"80\"></textarea></label>\
         <button type=\"submit\">Replay</button></form>\
         <form class=\"act\" method=\"post\" action=\"/dead-letters/{id}/skip\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Reason for the skip (kept with the action)<input name=\"reason\" required size=\"60\"></label>\
         <button type=\"submit\">Skip (pass over it for good)</button></form>"
    )
}

/// What an action did: the verb's own words.
pub fn action_result(what: &str, succeeded: bool, said: &str, back: &str) -> String {
    page(
        "Action",
        &format!(
            "<p class=\"{}\" role=\"status\">{}: {}</p><pre>{}</pre>\
             <p><a href=\"{}\">Back</a> · <a href=\"/journal?kind=operator\">Operator actions in the journal</a></p>",
            if succeeded { "ok" } else { "bad" },
            escape(what),
            if succeeded { "done" } else { "not done" },
            escape(said),
            escape(back),
        ),
    )
}

/// `/streams/{key}`: one entity explained.
pub fn stream(view: &StreamView, fields: &[String], csrf: &str, now_ms: u64) -> String {
    let applied = view.record.as_ref().map_or(0, |r| r.applied);
    let mut body = format!("<p>Applied version <strong>{applied}</strong></p>");
    body.push_str(&pause_section(view, csrf, now_ms));
    body.push_str(&document_section(view, fields));
    let next_dead = view
        .dead_letters
        .iter()
        .find(|d| d.version == Some(applied + 1));
    body.push_str(&waiting_section(view, applied, next_dead));
    body.push_str(&skip_missing_form(view, csrf, applied, next_dead));
    let dead: Vec<Vec<String>> = view
        .dead_letters
        .iter()
        .map(|d| {
            vec![
                format!("<a href=\"/dead-letters/{0}\">#{0}</a>", d.id),
                d.version.map(|v| v.to_string()).unwrap_or_default(),
                age(now_ms, Some(d.at_ms)),
                escape(&redact_reason(&d.reason, fields)),
            ]
        })
        .collect();
    body.push_str(&table(
        "Dead letters",
        &["entry", "version", "first seen", "reason"],
        &dead,
    ));
    body.push_str(&journal_table("Journal", &view.journal, fields));
    page(&format!("Stream {}", view.stream), &body)
}

/// Who paused the stream and the resume button, or the pause button.
fn pause_section(view: &StreamView, csrf: &str, now_ms: u64) -> String {
    let href = stream_href(&view.stream);
    match &view.paused {
        Some(pause) => format!(
            "<p class=\"bad\" role=\"status\">Paused by {} {} ago: {}. Its events wait, \
             durable, until it is resumed.</p>{}",
            escape(&pause.user),
            age(now_ms, Some(pause.since_ms)),
            escape(&pause.reason),
            reason_form(
                &format!("{href}/resume"),
                csrf,
                "Resume this stream",
                "Reason for the resume"
            )
        ),
        None => reason_form(
            &format!("{href}/pause"),
            csrf,
            "Pause this stream",
            "Reason for the pause (its events wait until it is resumed)",
        ),
    }
}

/// The document (redacted) and, for a stream merged away, where it went.
fn document_section(view: &StreamView, fields: &[String]) -> String {
    let document = match &view.document {
        None => "no document yet".to_string(),
        Some(Document::Deleted) => "deleted (a tombstone)".to_string(),
        Some(Document::Live(value)) => format!(
            "<pre>{}</pre>",
            escape(&serde_json::to_string_pretty(&redact(value, fields)).unwrap_or_default())
        ),
    };
    let mut section = format!("<h2>Document</h2>{document}");
    if !view.alias_chain.is_empty() {
        let chain: Vec<String> = view
            .alias_chain
            .iter()
            .map(|(target, cut)| format!("{} (cut at version {cut})", stream_link(target)))
            .collect();
        section.push_str(&format!(
            "<h2>Merged into</h2><p>{} → {}</p>",
            escape(&view.stream),
            chain.join(" → ")
        ));
    }
    section
}

/// Each waiting event with the reason it waits.
fn waiting_section(view: &StreamView, applied: u64, next_dead: Option<&DeadLetter>) -> String {
    let waiting: Vec<Vec<String>> = view
        .waiting
        .iter()
        .map(|p| {
            let why = match (&p.state, &p.awaits, next_dead) {
                _ if view.paused.is_some() && p.state != PendingState::Skipped => {
                    "paused by an operator".into()
                }
                (PendingState::Parked, Some((stream, version)), _) => {
                    format!(
                        "waits for {} to reach version {version}",
                        stream_link(stream)
                    )
                }
                (PendingState::Skipped, _, _) => "a version passed over (skip marker)".into(),
                (_, _, Some(dead)) => format!(
                    "behind version {} — <a href=\"/dead-letters/{1}\">dead letter #{1}</a>",
                    applied + 1,
                    dead.id
                ),
                _ if p.version > applied + 1 => format!("missing version {}", applied + 1),
                _ => "behind an earlier event of this stream".into(),
            };
            vec![p.version.to_string(), why]
        })
        .collect();
    table("What waits, and why", &["version", "why"], &waiting)
}

/// The form that passes over a missing version, when one is missing. Only a version no
/// record holds can be passed over (the engine refuses otherwise).
fn skip_missing_form(
    view: &StreamView,
    csrf: &str,
    applied: u64,
    next_dead: Option<&DeadLetter>,
) -> String {
    let gap = next_dead.is_none()
        && !view.waiting.iter().any(|p| p.version == applied + 1)
        && view
            .waiting
            .iter()
            .any(|p| p.state != PendingState::Skipped && p.version > applied + 1);
    if !gap {
        return String::new();
    }
    format!(
        "<form class=\"act\" method=\"post\" action=\"{}/skip-missing\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"version\" value=\"{}\">\
         <label>Reason it is known lost (kept with the action)<input name=\"reason\" required size=\"60\"></label>\
         <button type=\"submit\">Pass over missing version {}</button></form>",
        escape(&stream_href(&view.stream)),
        escape(csrf),
        applied + 1,
        applied + 1,
    )
}

fn journal_table(caption: &str, entries: &[JournalEntry], fields: &[String]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                utc(e.at_ms),
                escape(e.kind),
                e.stream.as_deref().map(stream_link).unwrap_or_default(),
                e.version.map(|v| v.to_string()).unwrap_or_default(),
                escape(&redact_reason(&summary(e), fields)),
            ]
        })
        .collect();
    table(
        caption,
        &["when (UTC)", "kind", "stream", "version", "what"],
        &rows,
    )
}

/// Filters of the journal page.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct JournalQuery {
    /// One kind (`ordo notices --kind`).
    #[serde(default)]
    pub kind: String,
    /// One stream.
    #[serde(default)]
    pub stream: String,
}

/// `/journal`: operator actions and alerts, newest last.
pub fn journal(entries: &[JournalEntry], query: &JournalQuery, fields: &[String]) -> String {
    let options: String = std::iter::once("")
        .chain(ordo_store::journal::JOURNAL_KINDS.iter().copied())
        .map(|kind| {
            format!(
                "<option value=\"{0}\"{1}>{2}</option>",
                escape(kind),
                if kind == query.kind { " selected" } else { "" },
                if kind.is_empty() { "any" } else { kind }
            )
        })
        .collect();
    let body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/journal\">\
         <label>Kind<select name=\"kind\">{options}</select></label>\
         <label>Stream<input name=\"stream\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></form>{}",
        escape(&query.stream),
        journal_table(&format!("{} entries", entries.len()), entries, fields)
    );
    page("Journal", &body)
}

/// A page for a stream key given in a URL (for links from elsewhere).
pub fn stream_href(stream: &str) -> String {
    format!("/streams/{}", path_segment(stream))
}

#[cfg(test)]
mod tests {
    use super::redact_reason;

    #[test]
    fn a_text_naming_a_redacted_field_is_hidden_whole() {
        let fields = vec!["email".to_string()];
        for reason in [
            "field `email`: expected a number, got \"ada@example.com\"",
            "got \"ada@example.com\" for field `email`",
        ] {
            assert_eq!(
                redact_reason(reason, &fields),
                "[hidden: it names the redacted field `email`]"
            );
        }
        assert_eq!(
            redact_reason("field `balance`: expected a number", &fields),
            "field `balance`: expected a number"
        );
        assert_eq!(redact_reason("anything", &[]), "anything");
    }
}
