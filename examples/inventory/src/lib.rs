//! The Inventory service: purchases and customer merges, kept in the team's own tables
//! `inventory(customer, sku, quantity)` and `customers(id, merged_into, version)` by a
//! transactional handler, in the very SQLite transaction in which ordo records its
//! versions and positions.
//!
//! Events (the `op` is the team's own; ordo reads only `merge`):
//! - `CustomerRegistered` on `customer-N`;
//! - `PurchaseMade` on `customer-N`, `data: {"sku": "…", "quantity": N}` (N ≥ 1, else it
//!   is rejected and dead-lettered);
//! - `CustomersMerged` on the surviving customer, `op: "merge"`,
//!   `data: {"from": ["customer-M"]}`, `after: [{"stream": "customer-M", "version": CUT}]`.
//!
//! A purchase of a merged-away customer that arrives after the merge comes with the
//! survivor as [`Call::document`]: it lands on the survivor's row.

use ordo_runtime::handler::{Call, Refusal, TransactionalHandler};
use ordo_store::rusqlite::{params, Connection};

/// The team's tables, created beside ordo's in the store's file.
pub const TABLES: &str = "
CREATE TABLE IF NOT EXISTS inventory (
    customer TEXT NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL,
    PRIMARY KEY (customer, sku));
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY, merged_into TEXT, version INTEGER NOT NULL);
";

/// Keeps the inventory.
#[derive(Debug, Default)]
pub struct Inventory;

impl TransactionalHandler<Connection> for Inventory {
    fn handle(&mut self, db: &mut Connection, call: &Call<'_>) -> Result<(), Refusal> {
        let event = call.event();
        let customer = call.document();
        if let Some(sources) = call.sources() {
            for source in sources {
                merge(db, source, customer)?;
            }
        } else {
            match &*event.event_type {
                "CustomerRegistered" => {}
                "PurchaseMade" => purchase(db, customer, &event.data)?,
                other => return Err(Refusal::rejected(format!("unknown event type `{other}`"))),
            }
        }
        // The team's own record of how far each customer's stream got: it must always
        // equal ordo's, which is what one transaction buys.
        db.execute(
            "INSERT INTO customers (id, merged_into, version) VALUES (?1, NULL, ?2)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            params![&*event.stream, event.version as i64],
        )?;
        Ok(())
    }
}

fn purchase(db: &Connection, customer: &str, data: &serde_json::Value) -> Result<(), Refusal> {
    let sku = data["sku"]
        .as_str()
        .ok_or_else(|| Refusal::rejected("a purchase without a `sku`"))?;
    let quantity = data["quantity"]
        .as_i64()
        .filter(|q| *q >= 1)
        .ok_or_else(|| {
            Refusal::rejected(format!(
                "purchase of `{sku}`: quantity must be a whole number ≥ 1"
            ))
        })?;
    db.execute(
        "INSERT INTO inventory (customer, sku, quantity) VALUES (?1, ?2, ?3)
         ON CONFLICT (customer, sku) DO UPDATE SET quantity = quantity + excluded.quantity",
        params![customer, sku, quantity],
    )?;
    Ok(())
}

fn merge(db: &Connection, source: &str, target: &str) -> Result<(), Refusal> {
    db.execute(
        "INSERT INTO inventory (customer, sku, quantity)
         SELECT ?2, sku, quantity FROM inventory WHERE customer = ?1
         ON CONFLICT (customer, sku) DO UPDATE SET quantity = quantity + excluded.quantity",
        params![source, target],
    )?;
    db.execute("DELETE FROM inventory WHERE customer = ?1", params![source])?;
    db.execute(
        "UPDATE customers SET merged_into = ?2 WHERE id = ?1 OR merged_into = ?1",
        params![source, target],
    )?;
    Ok(())
}
