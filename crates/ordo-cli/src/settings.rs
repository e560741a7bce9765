//! Raw flags resolved into the engine's configuration, and the store URL into a store.

use anyhow::{bail, Context};
use ordo_core::{Config, VersionMode};
use ordo_store::{AnyStore, SqliteStore, StoreUrl};
use serde_json::{json, Value};

use crate::cli::EngineArgs;

/// The key under which `run` records its engine settings in the store.
const ENGINE_SETTINGS_KEY: &str = "engine";

/// Opens the store a URL names. `create` for verbs that write a new store.
pub fn open_store(url: &str, create: bool) -> anyhow::Result<AnyStore> {
    Ok(AnyStore::open(url, create)?)
}

/// Opens an existing store for reading only (verbs that only read: they never create or
/// upgrade a store, and work on one they may not write).
pub fn open_read_only(url: &str) -> anyhow::Result<AnyStore> {
    Ok(AnyStore::open_read_only(url)?)
}

/// Opens a SQLite store (verbs that need SQLite-only features, such as the outbox).
pub fn open_sqlite(url: &str, create: bool) -> anyhow::Result<SqliteStore> {
    match StoreUrl::parse(url)? {
        StoreUrl::Sqlite(path) => Ok(SqliteStore::open(&path, create)?),
        StoreUrl::Postgres(_) => {
            bail!("the outbox relay reads a SQLite store for now (use sqlite:PATH)")
        }
    }
}

/// The engine configuration: flags first, then what the store recorded, then defaults.
pub fn engine_config(args: &EngineArgs, store: &mut AnyStore) -> anyhow::Result<Config> {
    let recorded: Value = match store.setting(ENGINE_SETTINGS_KEY)? {
        Some(text) => {
            serde_json::from_str(&text).context("the store's recorded engine settings")?
        }
        None => Value::Null,
    };
    let mut config = Config::default();
    let recorded_u64 = |key: &str| recorded.get(key).and_then(Value::as_u64);
    config.gap_timeout_ms = args
        .gap_timeout_ms
        .or(recorded_u64("gap_timeout_ms"))
        .unwrap_or(config.gap_timeout_ms);
    // Stores recorded before the settings took their limits' names keep the old keys.
    let recorded_either = |key: &str, old_key: &str| {
        recorded_u64(key)
            .or(recorded_u64(old_key))
            .map(|v| v as usize)
    };
    if let Some(ids) = args
        .dedupe_window_ids
        .or(recorded_either("dedupe_window_ids", "dedupe_window"))
    {
        if ids == 0 {
            bail!("--dedupe-window-ids must be at least 1");
        }
        config.dedupe_window_ids = ids;
    }
    if let Some(max) = args.stream_pending_events_max.or(recorded_either(
        "stream_pending_events_max",
        "stream_pending_max",
    )) {
        if max == 0 {
            bail!("--stream-pending-events-max must be at least 1");
        }
        config.stream_pending_events_max = max;
    }
    let prefixes: Vec<String> = if args.monotonic.is_empty() {
        recorded
            .get("monotonic")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        args.monotonic.clone()
    };
    config.mode_rules = prefixes
        .into_iter()
        .map(|p| (p, VersionMode::Monotonic))
        .collect();
    Ok(config)
}

/// Records the engine configuration so that operator verbs restore the same engine.
pub fn record_engine_config(store: &mut AnyStore, config: &Config) -> anyhow::Result<()> {
    let monotonic: Vec<&str> = config.mode_rules.iter().map(|(p, _)| p.as_str()).collect();
    let settings = json!({
        "gap_timeout_ms": config.gap_timeout_ms,
        "dedupe_window_ids": config.dedupe_window_ids,
        "stream_pending_events_max": config.stream_pending_events_max,
        // The names before the limits took theirs, for an older ordo reading this store
        // (an operator's verb, a member of a group being upgraded).
        "dedupe_window": config.dedupe_window_ids,
        "stream_pending_max": config.stream_pending_events_max,
        "monotonic": monotonic,
    });
    store.set_setting(ENGINE_SETTINGS_KEY, &settings.to_string())?;
    Ok(())
}

/// A listening address as typed: a bare port or `:PORT` means loopback
/// (`127.0.0.1:PORT`); anything else is taken as given (`--metrics`, `console --listen`).
pub fn listen_address(text: &str) -> String {
    match text.strip_prefix(':').unwrap_or(text) {
        port if port.parse::<u16>().is_ok() => format!("127.0.0.1:{port}"),
        _ => text.to_string(),
    }
}
