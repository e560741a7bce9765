//! Deterministic simulation for ordo: seeded histories, disorder, crashes, the in-order
//! oracle and the naive baseline, all driving the real core and the real projection.
//!
//! One seed reproduces one whole run; every failure prints its seed.

pub mod chaos;
pub mod convergence;
pub mod export;
pub mod group;
pub mod harness;
pub mod naive;
pub mod oracle;
pub mod rng;
pub mod scenarios;
pub mod workload;

pub use export::{compare, count_wrong, Divergence, Export, Row};
pub use harness::{Harness, MemoryStore, Step};
pub use rng::Rng;
