//! `--handler`: the handler flags resolved against what the store recorded, and the pool
//! started for them.
//!
//! A store that a handler ran on keeps that handler's settings: it holds no documents, so
//! running the document projection on it later would build documents from part of the
//! history. `run` refuses that mix; the operator verbs (`dlq replay`, `dlq skip`) send
//! what they unblock to the recorded handler.

use anyhow::{bail, Context};
use ordo_core::{Config, OpPolicy};
use ordo_runtime::handler::{ExecHandler, HandlerOptions, HandlerPool, HttpHandler};
use ordo_store::{AnyStore, Store};
use serde_json::{json, Value};

use crate::cli::HandlerArgs;

/// The key under which `run --handler` records its handler in the store.
use ordo_runtime::handler::HANDLER_SETTINGS_KEY;

/// A handler and how it is called.
#[derive(Clone, Debug)]
pub struct HandlerSettings {
    /// `http://…`, `https://…` or `exec:COMMAND`.
    pub url: String,
    /// Calls at once, timeout, attempts, backoff.
    pub options: HandlerOptions,
}

/// The handler `run` uses: its flags, checked against the store's record.
pub fn for_run(
    args: &HandlerArgs,
    store: &mut AnyStore,
) -> anyhow::Result<Option<HandlerSettings>> {
    let recorded = recorded(store)?;
    let Some(url) = &args.handler else {
        if let Some(recorded) = recorded {
            bail!(
                "this store was run with --handler {}: it holds no documents to apply the \
                 built-in projection to; pass --handler again (a new URL is fine)",
                recorded.url
            );
        }
        return Ok(None);
    };
    let options = HandlerOptions {
        concurrency: args.concurrency,
        timeout_ms: args.handler_timeout_ms,
        attempts: args.handler_attempts,
        backoff_initial_ms: args.handler_backoff_ms,
        backoff_max_ms: args.handler_backoff_max_ms.max(args.handler_backoff_ms),
        telemetry: None,
    };
    options.validate().map_err(anyhow::Error::msg)?;
    if !has_documents_ok(store, recorded.is_some())? {
        bail!(
            "this store holds documents of the built-in projection; a handler keeps its own \
             state, so start it on a new store"
        );
    }
    Ok(Some(HandlerSettings {
        url: url.clone(),
        options,
    }))
}

/// The handler the operator verbs use: the one the last `run` recorded, if any.
pub fn recorded(store: &mut AnyStore) -> anyhow::Result<Option<HandlerSettings>> {
    let Some(text) = store.setting(HANDLER_SETTINGS_KEY)? else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(&text).context("the store's recorded handler")?;
    let number =
        |key: &str, default: u64| value.get(key).and_then(Value::as_u64).unwrap_or(default);
    let defaults = HandlerOptions::default();
    let url = value
        .get("url")
        .and_then(Value::as_str)
        .context("the store's recorded handler has no url")?
        .to_string();
    Ok(Some(HandlerSettings {
        url,
        options: HandlerOptions {
            concurrency: number("concurrency", defaults.concurrency as u64) as usize,
            timeout_ms: number("timeout_ms", defaults.timeout_ms),
            attempts: number("attempts", u64::from(defaults.attempts)) as u32,
            backoff_initial_ms: number("backoff_initial_ms", defaults.backoff_initial_ms),
            backoff_max_ms: number("backoff_max_ms", defaults.backoff_max_ms),
            telemetry: None,
        },
    }))
}

/// Records `settings` as the store's handler (for the operator verbs, and to keep the
/// document projection off a handler store).
pub fn record(store: &mut AnyStore, settings: &HandlerSettings) -> anyhow::Result<()> {
    let options = &settings.options;
    let text = json!({
        "url": settings.url,
        "concurrency": options.concurrency,
        "timeout_ms": options.timeout_ms,
        "attempts": options.attempts,
        "backoff_initial_ms": options.backoff_initial_ms,
        "backoff_max_ms": options.backoff_max_ms,
    });
    store.set_setting(HANDLER_SETTINGS_KEY, &text.to_string())?;
    Ok(())
}

/// A handler store, or one that applied nothing yet, may take a handler.
fn has_documents_ok(store: &mut AnyStore, handler_store: bool) -> anyhow::Result<bool> {
    if handler_store {
        return Ok(true);
    }
    Ok(store.counters()?.applied == 0)
}

/// The engine settings a handler needs: its events' ops are the team's own.
pub fn adapt_config(config: &mut Config, settings: Option<&HandlerSettings>) {
    if settings.is_some() {
        config.op_policy = OpPolicy::Custom;
    }
}

/// Starts the pool for `settings`.
pub fn start(settings: &HandlerSettings) -> anyhow::Result<HandlerPool> {
    let options = settings.options.clone();
    let pool = match settings.url.strip_prefix("exec:") {
        Some(command) => {
            if command.trim().is_empty() {
                bail!("--handler exec: needs a command, as in exec:'python3 handler.py'");
            }
            HandlerPool::start(ExecHandler::new(command), options)?
        }
        None => HandlerPool::start(HttpHandler::new(&settings.url)?, options)?,
    };
    Ok(pool)
}
