//! ordo's performance suite. Every figure is reported beside a baseline measured in the
//! same run, because these machines are noisy and only ratios travel.

pub mod alloc;
pub mod core;
pub mod embedded;
pub mod handler;
pub mod kafka;
pub mod mixed;
pub mod nats;
pub mod parked;
pub mod slow;
pub mod sqs;

pub use alloc::CountingAllocator;
