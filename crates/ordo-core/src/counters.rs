//! Counters for every decision the core makes, so that a run can say which mechanism
//! absorbed which disorder.

use std::fmt;

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
