//! What each page reads from the store, through one read-only connection of the
//! console's own (opened at the first request, and again after an error: a database
//! restarted, a store not created yet). Reads block; the server runs them off its async
//! threads.

use std::sync::Arc;

use ordo_core::{DeadLetter, Load, PendingRecord, StreamRecord};
use ordo_projection::Document;
use ordo_runtime::replay_forecast::alias_chain;
use ordo_runtime::replay_forecast::Forecast;
use ordo_store::journal::{JournalEntry, JournalFilter};
use ordo_store::{AnyStore, ReadError, Store, StoreStatus};

/// Most journal entries a page shows.
pub const JOURNAL_PAGE_MAX: u64 = 500;

/// One stream, explained.
#[derive(Clone, Debug)]
pub struct StreamView {
    /// The stream.
    pub stream: String,
    /// Its document as the store holds it (`None`: never written).
    pub document: Option<Document>,
    /// Its applied version and alias.
    pub record: Option<StreamRecord>,
    /// Where its alias leads: each target and the cut, in order.
    pub alias_chain: Vec<(String, u64)>,
    /// Its waiting events (and skip markers).
    pub waiting: Vec<PendingRecord>,
    /// Its dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Its journal entries, newest last.
    pub journal: Vec<JournalEntry>,
    /// The operator's pause of it, in force.
    pub paused: Option<ordo_store::Pause>,
}

/// The console's connection to the store.
pub struct Reader {
    url: String,
    store: Option<AnyStore>,
}

impl Reader {
    /// A reader of the store at `url` (not opened yet).
    pub fn new(url: &str) -> Reader {
        Reader {
            url: url.to_string(),
            store: None,
        }
    }

    /// Runs `read` on the store, opening it first if needed; an error drops the
    /// connection, so that the next request opens a new one.
    fn with<T>(
        &mut self,
        read: impl FnOnce(&mut AnyStore) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let store = match self.store.as_mut() {
            Some(store) => store,
            None => self.store.insert(
                AnyStore::open_read_only(&self.url)
                    .map_err(|e| ReadError::Unavailable(e.to_string()))?,
            ),
        };
        let result = read(store);
        if result.is_err() {
            self.store = None;
        }
        result
    }

    /// The overview: `ordo status`, naming up to `streams` waiting streams.
    pub fn status(&mut self, streams: usize) -> Result<StoreStatus, ReadError> {
        self.with(|store| store.status_waiting(streams))
    }

    /// Every dead letter, oldest first.
    pub fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, ReadError> {
        self.with(|store| store.dead_letters())
    }

    /// What replaying dead letter `id` would do (`None`: no such entry).
    pub fn forecast(
        &mut self,
        id: u64,
    ) -> Result<Option<(DeadLetter, ordo_runtime::replay_forecast::Forecast)>, ReadError> {
        self.with(|store| {
            let queue = store.dead_letters()?;
            let Some(entry) = queue.iter().find(|e| e.id == id).cloned() else {
                return Ok(None);
            };
            let handler = store
                .setting(ordo_runtime::handler::HANDLER_SETTINGS_KEY)?
                .is_some();
            let forecast =
                ordo_runtime::replay_forecast::forecast(store, &entry, None, &queue, handler)?;
            Ok(Some((entry, forecast)))
        })
    }

    /// What replaying the entries `ids` one after the other, in entry order, would do:
    /// each forecast as if replayed now, except that an entry blocked only behind an
    /// earlier entry of the selection that would apply is said to apply after it.
    pub fn forecasts(&mut self, ids: &[u64]) -> Result<Vec<SelectedForecast>, ReadError> {
        self.with(|store| {
            let queue = store.dead_letters()?;
            let handler = store
                .setting(ordo_runtime::handler::HANDLER_SETTINGS_KEY)?
                .is_some();
            let found: Vec<DeadLetter> = ids
                .iter()
                .filter_map(|id| queue.iter().find(|e| e.id == *id).cloned())
                .collect();
            let mut forecasts = ordo_runtime::replay_forecast::forecast_in_order(
                store, &found, None, &queue, handler,
            )?
            .into_iter();
            let mut found = found.into_iter().peekable();
            let mut all = Vec::with_capacity(ids.len());
            for &id in ids {
                if found.peek().is_some_and(|e| e.id == id) {
                    let (forecast, after) = forecasts.next().expect("one forecast per entry");
                    all.push(SelectedForecast {
                        id,
                        entry: found.next(),
                        forecast: Some(forecast),
                        after,
                    });
                } else {
                    all.push(SelectedForecast::missing(id));
                }
            }
            Ok(all)
        })
    }

    /// Journal entries.
    pub fn journal(&mut self, filter: &JournalFilter) -> Result<Vec<JournalEntry>, ReadError> {
        self.with(|store| store.journal(filter))
    }

    /// One stream, explained.
    pub fn stream(&mut self, stream: &str) -> Result<StreamView, ReadError> {
        self.with(|store| {
            let key: Arc<str> = Arc::from(stream);
            let document = store.documents(std::slice::from_ref(&key))?.pop().flatten();
            let record = store.stream_records(std::slice::from_ref(&key))?.pop();
            let alias_chain = alias_chain(store, key.clone())?
                .into_iter()
                .map(|(target, cut)| (target.to_string(), cut))
                .collect();
            let waiting = store.load_pending(&Load::Stream(key))?.records;
            let dead_letters = store
                .dead_letters()?
                .into_iter()
                .filter(|d| d.stream.as_deref() == Some(stream))
                .collect();
            let journal = store.journal(&JournalFilter {
                stream: Some(stream.to_string()),
                limit: JOURNAL_PAGE_MAX,
                ..JournalFilter::default()
            })?;
            let paused = store
                .pauses()?
                .into_iter()
                .find(|p| matches!(&p.target, ordo_store::PauseTarget::Stream(s) if s == stream));
            Ok(StreamView {
                paused,
                stream: stream.to_string(),
                document,
                record,
                alias_chain,
                waiting,
                dead_letters,
                journal,
            })
        })
    }
}

/// One entry of a selection's dry run.
#[derive(Clone, Debug)]
pub struct SelectedForecast {
    /// The entry number asked for.
    pub id: u64,
    /// The entry (`None`: no longer in the queue).
    pub entry: Option<DeadLetter>,
    /// What its replay would do.
    pub forecast: Option<Forecast>,
    /// It applies only once this earlier entry of the selection has been replayed.
    pub after: Option<u64>,
}

impl SelectedForecast {
    fn missing(id: u64) -> Self {
        SelectedForecast {
            id,
            entry: None,
            forecast: None,
            after: None,
        }
    }
}

/// `value` with every field named in `fields` replaced, at any depth (payload redaction).
pub fn redact(value: &serde_json::Value, fields: &[String]) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(key, inner)| {
                    let shown = if fields.iter().any(|f| f == key) {
                        serde_json::Value::String("[redacted]".into())
                    } else {
                        redact(inner, fields)
                    };
                    (key.clone(), shown)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| redact(v, fields)).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_every_depth_and_only_the_named_fields() {
        let event = serde_json::json!({
            "id": "e1",
            "data": {"card": "4111", "owner": {"email": "a@b.c", "name": "Ada"}},
            "items": [{"email": "x@y.z"}]
        });
        let shown = redact(&event, &["email".into(), "card".into()]);
        assert_eq!(
            shown,
            serde_json::json!({
                "id": "e1",
                "data": {"card": "[redacted]", "owner": {"email": "[redacted]", "name": "Ada"}},
                "items": [{"email": "[redacted]"}]
            })
        );
    }
}
