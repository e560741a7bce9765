//! The transactional outbox: applications write events into the store's `outbox` table
//! in the same transaction as their own state, and `ordo relay` publishes them.
//!
//! ```no_run
//! # fn main() -> rusqlite::Result<()> {
//! let mut connection = rusqlite::Connection::open("state.db")?;
//! ordo_store::outbox::ensure_table(&connection)?;
//! let transaction = connection.transaction()?;
//! transaction.execute("UPDATE orders SET status = 'paid' WHERE id = 7", [])?;
//! ordo_store::outbox::write(
//!     &transaction,
//!     "order-7",
//!     r#"{"id":"order-7:4","stream":"order-7","version":4,"type":"OrderPaid","op":"patch","data":{"status":"paid"}}"#,
//! )?;
//! transaction.commit()?; // both, or neither
//! # Ok(()) }
//! ```

use rusqlite::{params, Connection, Transaction};

/// Creates the outbox table if the file has none yet (the store creates it too).
pub fn ensure_table(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS outbox (
             position INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, body TEXT NOT NULL,
             published INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (published, position);",
    )
}

/// Writes one event (its JSON envelope) for `stream` in the caller's transaction.
/// Returns its outbox position: the relay publishes in this order.
pub fn write(transaction: &Transaction<'_>, stream: &str, body: &str) -> rusqlite::Result<u64> {
    transaction
        .prepare_cached("INSERT INTO outbox (stream, body) VALUES (?1, ?2)")?
        .execute(params![stream, body])?;
    Ok(transaction.last_insert_rowid() as u64)
}
