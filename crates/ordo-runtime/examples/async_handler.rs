//! An async handler behind ordo's ordering: every order event is "sent to the shipping
//! service" (a few milliseconds of waiting, as an HTTP call would be), up to eight at
//! once across orders, each order's events in version order however they arrive.
//!
//! Run: `cargo run -p ordo-runtime --example async_handler`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordo_core::{Config, OpPolicy};
use ordo_runtime::handler::{Answer, Call, Handler, HandlerOptions, HandlerPool};
use ordo_runtime::{run_until_signal, Consumer, RunOptions, SourceUrl};
use ordo_store::{SqliteStore, Store};

/// Tells the shipping service about each order event; refuses an order it cannot ship.
struct Shipping {
    sent: Arc<Mutex<Vec<String>>>,
}

impl Handler for Shipping {
    async fn handle(&self, call: &Call<'_>) -> Answer {
        let event = call.event();
        // The other service: this is where an HTTP client call would await.
        tokio::time::sleep(Duration::from_millis(3)).await;
        if event.data["country"] == "Atlantis" {
            return Answer::Rejected {
                reason: "no carrier ships to Atlantis".into(),
            };
        }
        let line = format!("{} v{} {}", event.stream, event.version, event.event_type);
        self.sent.lock().unwrap().push(line);
        Answer::Applied
    }
}

const EVENTS: &str = r#"{"id":"o1-2","stream":"order-1","version":2,"type":"OrderPaid","op":"pay","data":{}}
{"id":"o1-1","stream":"order-1","version":1,"type":"OrderPlaced","op":"place","data":{"country":"PT"}}
{"id":"o2-1","stream":"order-2","version":1,"type":"OrderPlaced","op":"place","data":{"country":"Atlantis"}}
{"id":"o2-2","stream":"order-2","version":2,"type":"OrderPaid","op":"pay","data":{}}
{"id":"o3-1","stream":"order-3","version":1,"type":"OrderPlaced","op":"place","data":{"country":"NO"}}
{"id":"o1-3","stream":"order-1","version":3,"type":"OrderShipped","op":"ship","data":{}}
{"id":"o1-2","stream":"order-1","version":2,"type":"OrderPaid","op":"pay","data":{}}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("orders.jsonl");
    std::fs::write(&input, EVENTS)?;
    let store = SqliteStore::open(dir.path().join("state.db").to_str().unwrap(), true)?;
    let config = Config {
        op_policy: OpPolicy::Custom, // the ops are the team's own
        ..Config::default()
    };
    let url = SourceUrl::parse(&format!("file:{}", input.display()))?;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let shipping = Shipping { sent: sent.clone() };
    let options = HandlerOptions {
        concurrency: 8,
        ..HandlerOptions::default()
    };
    let consumer = Consumer::open(store, &url.checkpoint_key(), config)?
        .with_handlers(HandlerPool::start(shipping, options)?);
    let run = RunOptions {
        exit_when_idle: true,
        ..RunOptions::default()
    };
    let source = ordo_runtime::open_source(&url)?;
    let (report, mut consumer) = run_until_signal(consumer, source, run)?;
    for line in sent.lock().unwrap().iter() {
        println!("sent: {line}");
    }
    for entry in consumer.store().dead_letters()? {
        println!("dead letter {}: {}", entry.id, entry.reason);
    }
    println!("counters: {}", report.counters);
    Ok(())
}
