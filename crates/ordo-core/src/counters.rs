//! Counters for every decision the core makes, so that a run can say which mechanism
//! absorbed which disorder.

use std::fmt;

/// Buckets of [`ReorderDistances`]: bucket `i` holds distances up to `2^i`, the last one
/// everything beyond.
pub const REORDER_BUCKETS: usize = 12;
const _: () = assert!(REORDER_BUCKETS >= 2 && REORDER_BUCKETS <= 64);

/// How far ahead of their stream's next expected version events arrived (only events
/// that arrived ahead of a gap): a histogram the metrics export, so that per-key
/// reordering shows in dashboards, with how deep it goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReorderDistances {
    /// Events per bucket (see [`REORDER_BUCKETS`]); not cumulative.
    pub buckets: [u64; REORDER_BUCKETS],
    /// The sum of all distances.
    pub sum: u64,
}

impl ReorderDistances {
    /// Counts one event `distance` versions ahead (at least 1).
    pub fn record(&mut self, distance: u64) {
        debug_assert!(distance >= 1, "an event ahead of a gap is at least 1 ahead");
        // The smallest i with distance <= 2^i.
        let bucket = (u64::BITS - distance.saturating_sub(1).leading_zeros()) as usize;
        self.buckets[bucket.min(REORDER_BUCKETS - 1)] += 1;
        self.sum = self.sum.saturating_add(distance);
    }

    /// Bucket `i`'s upper bound (`None`: the last, unbounded one).
    pub fn upper_bound(bucket: usize) -> Option<u64> {
        (bucket + 1 < REORDER_BUCKETS).then(|| 1u64 << bucket)
    }

    /// Events counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &ReorderDistances) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }
}

/// Decision counts. Every delivered event lands in exactly one of `applied`, `duplicate`,
/// `stale`, `dead_lettered` (or is still waiting); `buffered`, `parked`, `released`,
/// `redirected` and `late_after_merge` count what happened on the way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events applied by the projection (including redirected ones and merges).
    pub applied: u64,
    /// Events skipped because their id was seen before (redelivery, retries).
    pub duplicate: u64,
    /// Events skipped by the version guard with an id not seen before.
    pub stale: u64,
    /// Events that arrived ahead of a gap and waited in the gap buffer.
    pub buffered: u64,
    /// Events that waited for a dependency (`after`, a merge's cut).
    pub parked: u64,
    /// Parked events released when what they waited for applied.
    pub released: u64,
    /// Events applied to another stream's document through an alias.
    pub redirected: u64,
    /// Source events beyond a merge's cut (applied before or after the merge).
    pub late_after_merge: u64,
    /// Events put in the dead-letter queue.
    pub dead_lettered: u64,
    /// Streams currently stalled on a gap older than the gap timeout.
    pub stalled: u64,
    /// Versions passed over by an explicit operator skip.
    pub skipped: u64,
}

impl Counters {
    /// The counters as `(name, value)` pairs, in the contract's order.
    pub fn fields(&self) -> [(&'static str, u64); 11] {
        [
            ("applied", self.applied),
            ("duplicate", self.duplicate),
            ("stale", self.stale),
            ("buffered", self.buffered),
            ("parked", self.parked),
            ("released", self.released),
            ("redirected", self.redirected),
            ("late_after_merge", self.late_after_merge),
            ("dead_lettered", self.dead_lettered),
            ("stalled", self.stalled),
            ("skipped", self.skipped),
        ]
    }

    /// Rebuilds counters from `(name, value)` pairs; unknown names are ignored.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, u64)>) -> Self {
        let mut counters = Counters::default();
        for (name, value) in fields {
            let slot = match name {
                "applied" => &mut counters.applied,
                "duplicate" => &mut counters.duplicate,
                "stale" => &mut counters.stale,
                "buffered" => &mut counters.buffered,
                "parked" => &mut counters.parked,
                "released" => &mut counters.released,
                "redirected" => &mut counters.redirected,
                "late_after_merge" => &mut counters.late_after_merge,
                "dead_lettered" => &mut counters.dead_lettered,
                "stalled" => &mut counters.stalled,
                "skipped" => &mut counters.skipped,
                _ => continue,
            };
            *slot = value;
        }
        counters
    }

    /// The counters as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (name, value) in self.fields() {
            object.insert(name.into(), value.into());
        }
        serde_json::Value::Object(object)
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, value) in self.fields() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod reorder_tests {
    use super::*;

    #[test]
    fn distances_land_in_power_of_two_buckets() {
        let mut h = ReorderDistances::default();
        for d in [1, 2, 3, 4, 5, 1024, 1025, u64::MAX] {
            h.record(d);
        }
        assert_eq!(h.buckets[0], 1); // 1
        assert_eq!(h.buckets[1], 1); // 2
        assert_eq!(h.buckets[2], 2); // 3, 4
        assert_eq!(h.buckets[3], 1); // 5
        assert_eq!(h.buckets[10], 1); // 1024
        assert_eq!(h.buckets[11], 2); // beyond
        assert_eq!(h.count(), 8);
        assert_eq!(ReorderDistances::upper_bound(10), Some(1024));
        assert_eq!(ReorderDistances::upper_bound(11), None);
    }
}
