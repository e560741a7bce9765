//! ordo's runtime: a source feeding the core, the document projection applying what the
//! core releases, and a store committing each batch in one transaction.

mod consumer;
pub mod handler;
mod handlers;
#[cfg(feature = "postgres")]
pub mod membership;
pub mod operator;
pub mod relay;
pub mod replay_forecast;
mod run;
mod source;
pub mod telemetry;

pub use consumer::{now_ms, ActionError, Clock, ConsumeError, Consumer};
pub use handlers::{apply_concurrently, HandlerReport};
pub use run::{
    run, run_serving, run_until_signal, RunEnd, RunError, RunLoop, RunOptions, RunReport,
};
pub use source::{
    log_lag, open as open_source, CrashAfter, Delivery, FileSource, LogSource, Polled, Source,
    SourceError, SourceUrl,
};

/// Every bound the runtime keeps, and the defaults of its settings, named once.
pub mod limits {
    pub use crate::consumer::{
        AWAITED_READ_CHUNK_MAX, DOCUMENT_CACHE_MAX, HANDLER_DELIVERED_AHEAD_MAX,
        HANDLER_WORKS_OUT_MAX, NOTICES_PRINTED_PER_COMMIT_MAX, WORKS_PER_ROUND_MAX,
    };
    pub use crate::handlers::DELIVERED_AHEAD_MAX;
    pub use crate::run::{
        AWAITED_RECHECK_MS, COMMIT_EVENTS_MAX_DEFAULT, COMMIT_INTERVAL_MS_DEFAULT,
        CONFLICTS_IN_A_ROW_MAX, HANDLER_POLL_WAIT_MS, OPERATOR_RECHECK_MS, POLL_WAIT_MS,
        PROGRESS_INTERVAL_MS, STOP_GRACE_MS,
    };
}
