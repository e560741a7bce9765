//! Scenarios from the field, as seeded histories written in a valid in-order sequence.
//!
//! Each history respects the contract's rule for a fair check: where two events on one
//! document have no order between them (a merge source's late events against the
//! merge), they commute (`incr`).

use ordo_core::{Dependency, Event, Op};
use serde_json::{json, Value};

use crate::rng::Rng;
use crate::workload::event;

/// A field scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Accounts opened with a `set`, then credits and debits (`incr`): order matters.
    Bank,
    /// Purchases for customers, customers merged while purchases are still in a backlog.
    Merges,
    /// Categories and products that depend on them, with create/delete requeue pitfalls.
    Catalog,
    /// Orders saved to an event store, published by a publisher that crashes in between.
    EventStore,
    /// All of the above at once.
    Mixed,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 5] = [
        Scenario::Bank,
        Scenario::Merges,
        Scenario::Catalog,
        Scenario::EventStore,
        Scenario::Mixed,
    ];

    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Bank => "bank",
            Scenario::Merges => "merges",
            Scenario::Catalog => "catalog",
            Scenario::EventStore => "event-store",
            Scenario::Mixed => "mixed",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line saying what it exercises.
    pub fn summary(self) -> &'static str {
        match self {
            Scenario::Bank => "account opening then credits and debits; a credit before the opening would be wiped",
            Scenario::Merges => "customer merges under a purchase backlog; purchases for merged customers arrive late",
            Scenario::Catalog => "products depend on their category; create (after X), X, delete must not resurrect",
            Scenario::EventStore => "events stored then published; the publisher crashes between publish and mark",
            Scenario::Mixed => "all of the above interleaved",
        }
    }

    /// The scenario's history for `seed`, about `size` events.
    pub fn history(self, seed: u64, size: usize) -> Vec<Event> {
        let mut builder = Builder::new(seed, self.name());
        match self {
            Scenario::Bank => bank(&mut builder, size),
            Scenario::Merges => merges(&mut builder, size),
            Scenario::Catalog => catalog(&mut builder, size),
            Scenario::EventStore => event_store(&mut builder, size),
            Scenario::Mixed => {
                // Interleave four independent histories, each keeping its own order.
                let parts: Vec<Vec<Event>> = [
                    Scenario::Bank,
                    Scenario::Merges,
                    Scenario::Catalog,
                    Scenario::EventStore,
                ]
                .iter()
                .map(|s| s.history(seed, size / 4))
                .collect();
                let mut cursors = vec![0usize; parts.len()];
                let mut rng = Rng::derive(seed, "mixed");
                while cursors.iter().zip(&parts).any(|(c, p)| *c < p.len()) {
                    let i = rng.index(parts.len());
                    if cursors[i] < parts[i].len() {
                        builder.history.push(parts[i][cursors[i]].clone());
                        cursors[i] += 1;
                    }
                }
            }
        }
        builder.history
    }
}

impl Scenario {
    /// The scenario's characteristic disorder: how its events reach a consumer.
    pub fn deliveries(self, seed: u64, history: &[Event]) -> Vec<Event> {
        match self {
            // Producer retries: neighbours swap, some events arrive twice.
            Scenario::Bank => delayed(seed, history, 10, |_| 8),
            // A purchase backlog: purchases lag behind merges by up to 60 places.
            Scenario::Merges => delayed(seed, history, 10, |e| {
                if matches!(e.op, Op::Merge { .. }) {
                    0
                } else {
                    60
                }
            }),
            // A slow category topic: categories lag behind the products that need them.
            Scenario::Catalog => delayed(seed, history, 10, |e| {
                if e.stream.starts_with("category-") {
                    40
                } else {
                    2
                }
            }),
            Scenario::EventStore => {
                crate::workload::deliver_with_publisher_crashes(seed, history, 16, 20)
            }
            Scenario::Mixed => delayed(seed, history, 15, |_| 30),
        }
    }
}

/// Each event is displaced later by up to `delay(event)` places; a share is delivered
/// twice (the copy displaced again).
pub fn delayed(
    seed: u64,
    history: &[Event],
    duplicate_percent: u64,
    delay: impl Fn(&Event) -> usize,
) -> Vec<Event> {
    let mut rng = Rng::derive(seed, "delay");
    let mut keyed: Vec<(usize, usize, Event)> = Vec::with_capacity(history.len() * 2);
    for (i, event) in history.iter().enumerate() {
        let most = delay(event);
        keyed.push((i + rng.index(most + 1), keyed.len(), event.clone()));
        if rng.chance(duplicate_percent) {
            keyed.push((i + rng.index(most + 20), keyed.len(), event.clone()));
        }
    }
    keyed.sort_by_key(|(key, tie, _)| (*key, *tie));
    keyed.into_iter().map(|(_, _, e)| e).collect()
}

struct Builder {
    rng: Rng,
    prefix: &'static str,
    versions: std::collections::HashMap<String, u64>,
    history: Vec<Event>,
}

impl Builder {
    fn new(seed: u64, prefix: &'static str) -> Self {
        Builder {
            rng: Rng::derive(seed, prefix),
            prefix,
            versions: Default::default(),
            history: Vec::new(),
        }
    }

    fn version(&self, stream: &str) -> u64 {
        self.versions.get(stream).copied().unwrap_or(0)
    }

    fn push(
        &mut self,
        stream: &str,
        event_type: &str,
        op: Op,
        data: Value,
        after: Vec<Dependency>,
    ) -> u64 {
        let version = self.version(stream) + 1;
        self.versions.insert(stream.to_string(), version);
        let id = format!("{}:{stream}:{version}", self.prefix);
        self.history
            .push(event(id, stream, version, event_type, op, data, after));
        version
    }
}

fn dependency(stream: &str, version: u64) -> Dependency {
    Dependency {
        stream: stream.into(),
        version,
    }
}

fn bank(b: &mut Builder, size: usize) {
    let accounts = (size / 12).max(2);
    let names: Vec<String> = (0..accounts).map(|i| format!("account-{i}")).collect();
    for name in &names {
        b.push(
            name,
            "AccountOpened",
            Op::Set,
            json!({"balance": 100, "operations": 0}),
            vec![],
        );
    }
    while b.history.len() < size {
        let name = names[b.rng.index(names.len())].clone();
        let amount = b.rng.range(1, 50) as i64;
        if b.rng.chance(50) {
            b.push(
                &name,
                "Credited",
                Op::Incr,
                json!({"balance": amount, "operations": 1}),
                vec![],
            );
        } else {
            b.push(
                &name,
                "Debited",
                Op::Incr,
                json!({"balance": -amount, "operations": 1}),
                vec![],
            );
        }
    }
}

fn merges(b: &mut Builder, size: usize) {
    let customers = (size / 10).max(4);
    let names: Vec<String> = (0..customers).map(|i| format!("customer-{i}")).collect();
    let mut merged = vec![false; customers];
    let mut touched_by_merge = vec![false; customers];
    for (i, name) in names.iter().enumerate() {
        b.push(
            name,
            "CustomerRegistered",
            Op::Set,
            json!({"name": format!("c{i}"), "spent": 0, "purchases": 0, "tier": "basic"}),
            vec![],
        );
    }
    while b.history.len() < size {
        let i = b.rng.index(customers);
        let roll = b.rng.below(100);
        if roll < 8 && !merged[i] {
            // Merge another live customer into i: the cut is the source's latest version,
            // as the merging party saw it.
            let j = b.rng.index(customers);
            if j != i && !merged[j] {
                let cut = b.version(&names[j]);
                b.push(
                    &names[i],
                    "CustomersMerged",
                    Op::Merge {
                        from: vec![names[j].clone().into()],
                    },
                    json!({"from": [names[j]]}),
                    vec![dependency(&names[j], cut)],
                );
                merged[j] = true;
                touched_by_merge[i] = true;
                touched_by_merge[j] = true;
                continue;
            }
        }
        if roll < 14 && !touched_by_merge[i] {
            let tier = ["basic", "silver", "gold"][b.rng.index(3)];
            b.push(
                &names[i],
                "TierChanged",
                Op::Patch,
                json!({"tier": tier}),
                vec![],
            );
            continue;
        }
        let amount = b.rng.range(5, 200) as i64;
        b.push(
            &names[i],
            "PurchaseMade",
            Op::Incr,
            json!({"spent": amount, "purchases": 1}),
            vec![],
        );
    }
}

fn catalog(b: &mut Builder, size: usize) {
    let categories = (size / 20).max(2);
    let mut created = vec![false; categories];
    let mut product = 0usize;
    while b.history.len() < size {
        let c = b.rng.index(categories);
        let category = format!("category-{c}");
        if !created[c] || b.rng.chance(10) {
            if created[c] {
                b.push(
                    &category,
                    "CategoryRenamed",
                    Op::Patch,
                    json!({"name": format!("cat {c}'")}),
                    vec![],
                );
            } else {
                b.push(
                    &category,
                    "CategoryCreated",
                    Op::Set,
                    json!({"name": format!("cat {c}"), "visible": true}),
                    vec![],
                );
                created[c] = true;
            }
            continue;
        }
        // A product's life: created in a category (it waits for the category), maybe
        // repriced, maybe deleted — the create/delete requeue pitfall when the create
        // has to wait and the delete does not.
        let name = format!("product-{product}");
        product += 1;
        let category_version = b.version(&category);
        let price = b.rng.range(1, 99);
        b.push(
            &name,
            "ProductCreated",
            Op::Set,
            json!({"category": category, "price": price, "stock": 0}),
            vec![dependency(&category, category_version)],
        );
        if b.rng.chance(60) {
            let stock = b.rng.range(1, 20) as i64;
            b.push(
                &name,
                "Restocked",
                Op::Incr,
                json!({"stock": stock}),
                vec![],
            );
        }
        if b.rng.chance(40) {
            let price = b.rng.range(1, 99);
            b.push(
                &name,
                "Repriced",
                Op::Patch,
                json!({"price": price}),
                vec![],
            );
        }
        if b.rng.chance(35) {
            b.push(&name, "ProductDeleted", Op::Delete, Value::Null, vec![]);
        }
    }
}

fn event_store(b: &mut Builder, size: usize) {
    let orders = (size / 6).max(2);
    let mut open: Vec<usize> = Vec::new();
    let mut next = 0usize;
    while b.history.len() < size {
        if open.is_empty() || (next < orders && b.rng.chance(30)) {
            let name = format!("order-{next}");
            b.push(
                &name,
                "OrderPlaced",
                Op::Set,
                json!({"status": "placed", "items": 0, "total": 0}),
                vec![],
            );
            open.push(next);
            next += 1;
            continue;
        }
        let k = b.rng.index(open.len());
        let name = format!("order-{}", open[k]);
        if b.rng.chance(20) {
            b.push(
                &name,
                "OrderShipped",
                Op::Patch,
                json!({"status": "shipped"}),
                vec![],
            );
            open.swap_remove(k);
        } else {
            let price = b.rng.range(1, 100) as i64;
            b.push(
                &name,
                "ItemAdded",
                Op::Incr,
                json!({"items": 1, "total": price}),
                vec![],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_are_deterministic_and_in_version_order() {
        for scenario in Scenario::ALL {
            let a = scenario.history(3, 200);
            assert_eq!(a, scenario.history(3, 200), "{}", scenario.name());
            assert!(a.len() >= 150, "{}: {}", scenario.name(), a.len());
            let mut versions = std::collections::HashMap::new();
            for e in &a {
                let v = versions.entry(e.stream.clone()).or_insert(0u64);
                assert_eq!(e.version, *v + 1, "{}: {}", scenario.name(), e.stream);
                *v = e.version;
            }
        }
    }
}
