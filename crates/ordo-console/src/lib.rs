//! `ordo console`: the operator's web console, next to a running `ordo run` (or a group of
//! them) on the same store.
//!
//! Server-rendered HTML with no front-end build step: each page is one read of the store
//! through a read-only connection of the console's own (nothing here writes around the
//! engine's rules), rendered on the server, readable without JavaScript.
//!
//! - [`access`]: who may use it — loopback by default, a token required anywhere else —
//!   and the CSRF check on every state-changing request;
//! - [`actions`]: what it changes, always through the CLI verbs themselves;
//! - [`reads`]: what a page reads from the store, as plain data;
//! - [`runs`]: what the running consumers' metrics endpoints say (heartbeat, lag);
//! - [`pages`]: how each page says it, as HTML ([`html`] escapes and lays out).

pub mod access;
pub mod actions;
pub mod history;
mod html;
pub mod pages;
pub mod reads;
pub mod runs;
mod server;

pub use access::{Access, AccessError, Csrf};
pub use server::{serve, ConsoleConfig, ServeError};
