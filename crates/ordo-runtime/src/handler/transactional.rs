//! Transactional handlers: Rust code that writes the team's own tables inside the very
//! transaction in which ordo records versions and positions.
//!
//! The consumer runs the handler on its own thread, in turn, like the built-in document
//! projection; each call gets a savepoint inside the batch's open transaction, so a
//! rejected event leaves none of its writes behind, and the batch's commit ends the
//! handler's writes together with ordo's. A crash at any point loses both or neither:
//! "effect in the team's table" and "version recorded" stay equal for every event, with
//! no idempotency keys needed.

use ordo_core::{Outcome, Work};
use ordo_store::BatchTransaction;

use super::{clip_reason, Call};
use crate::consumer::ConsumeError;

/// Why a transactional handler did not apply an event.
#[derive(Debug)]
pub enum Refusal {
    /// The event is wrong for good: dead-lettered with this reason, its writes rolled back,
    /// and its stream waits behind it.
    Rejected(String),
    /// Something failed that is not the event's fault (the disk, a constraint the code did
    /// not expect): the run stops and nothing of the batch is committed.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl Refusal {
    /// A rejection with this reason.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Refusal::Rejected(reason.into())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Refusal {
    fn from(error: E) -> Self {
        Refusal::Failed(Box::new(error))
    }
}

/// The team's code, writing through the store's connection `C`:
/// `ordo_store::rusqlite::Connection` for SQLite, `ordo_store::postgres::Client` for
/// PostgreSQL (inside the batch's transaction and a savepoint: do not commit it).
///
/// Called on the consumer's thread, one event at a time, in an order that respects every
/// stream's versions, every `after` and every merge cut; a merge arrives with its
/// [`Call::sources`] to fold, and a late event of a merged-away stream with its target as
/// [`Call::document`].
pub trait TransactionalHandler<C>: Send + 'static {
    /// Applies `call`'s event through `db`.
    fn handle(&mut self, db: &mut C, call: &Call<'_>) -> Result<(), Refusal>;
}

/// Runs one work through a transactional handler inside its savepoint.
pub(crate) fn apply_in_transaction<S, H>(
    handler: &mut H,
    store: &mut S,
    work: &Work,
) -> Result<Outcome, ConsumeError>
where
    S: BatchTransaction,
    H: TransactionalHandler<S::Connection>,
{
    let db = store.begin_work()?;
    let result = handler.handle(db, &Call::new(work, 1));
    match result {
        Ok(()) => {
            store.end_work(true)?;
            Ok(Outcome::Applied)
        }
        Err(Refusal::Rejected(reason)) => {
            store.end_work(false)?;
            Ok(Outcome::Rejected {
                reason: clip_reason(&reason),
            })
        }
        Err(Refusal::Failed(error)) => {
            // None of the failed work's writes may reach a later commit.
            store.end_work(false)?;
            Err(ConsumeError::Handler(error))
        }
    }
}
