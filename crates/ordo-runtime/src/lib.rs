//! ordo's runtime: a source feeding the core, the document projection applying what the
//! core releases, and a store committing each batch in one transaction.

pub mod consumer;
pub mod handler;
pub mod handlers;
#[cfg(feature = "postgres")]
pub mod membership;
pub mod operator;
pub mod relay;
pub mod replay_forecast;
pub mod run;
pub mod source;
pub mod telemetry;

pub use consumer::{now_ms, ActionError, Clock, ConsumeError, Consumer};
pub use handlers::{apply_concurrently, HandlerReport};
pub use run::{
    run, run_serving, run_until_signal, RunEnd, RunError, RunLoop, RunOptions, RunReport,
};
pub use source::{CrashAfter, FileSource, LogSource, Polled, Source, SourceError, SourceUrl};
