//! Every bound the core enforces, named once.
//!
//! TigerBeetle's rule: everything has a limit. A limit hit by input is an operating error
//! (a dead letter with a reason); a limit hit by the core's own bookkeeping is a bug.
//!
//! A setting has one name everywhere: the `Config` field (`stream_pending_events_max`),
//! its default here with `_DEFAULT` added (`STREAM_PENDING_EVENTS_MAX_DEFAULT`), the
//! `ordo run` flag (`--stream-pending-events-max`) and the key the store records it under
//! (`"stream_pending_events_max"`).

/// Largest accepted event, in bytes of its JSON text.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;

/// Longest `id`, in bytes.
pub const EVENT_ID_BYTES_MAX: usize = 256;

/// Longest `stream`, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 256;

/// Highest accepted `version` (in an event and in its `after`): both stores keep
/// versions as signed 64-bit integers, so a larger one could not be stored as itself.
/// An event beyond it is dead-lettered with its reason at the envelope.
pub const VERSION_MAX: u64 = i64::MAX as u64;

/// Most entries in one event's `after` list.
pub const AFTER_ENTRIES_MAX: usize = 64;

/// Most sources one `merge` may fold.
pub const MERGE_SOURCES_MAX: usize = 64;

/// Default capacity of the dedupe window: it remembers the ids of this many most recent
/// insertions (see the dedupe window).
pub const DEDUPE_WINDOW_IDS_DEFAULT: usize = 1 << 20;

/// Default bound on the events one stream may hold waiting (gap buffer plus queue).
/// An event beyond it is dead-lettered with a reason instead of growing memory.
pub const STREAM_PENDING_EVENTS_MAX_DEFAULT: usize = 4096;

/// Default bound on the parked streams (head waiting for an `after` or a merge cut) whose
/// events are kept in memory. Beyond it the longest-parked streams are spilled: their
/// events stay only in the store until what they wait for applies, so a million parked
/// events cost the heap no more than this many.
pub const PARKED_STREAMS_IN_MEMORY_MAX_DEFAULT: usize = 50_000;

/// Default time a gap may stay open before its stream is reported stalled.
pub const GAP_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// A parked event released after waiting at least this long is noticed (`ordo notices`,
/// kind `released`): a dependency that comes late is worth an operator's look.
pub const LONG_PARKED_MS_DEFAULT: u64 = 60_000;

// Relations between the limits, checked when the crate compiles.
// An id or a stream name fits in an event.
const _: () = assert!(EVENT_ID_BYTES_MAX < EVENT_BYTES_MAX);
const _: () = assert!(STREAM_NAME_BYTES_MAX < EVENT_BYTES_MAX);
// A merge names a cut in `after` for each of its sources, so it may have no more sources
// than `after` has entries.
const _: () = assert!(MERGE_SOURCES_MAX <= AFTER_ENTRIES_MAX);
// A full `after` list of the longest names fits in an event.
const _: () = assert!(AFTER_ENTRIES_MAX * STREAM_NAME_BYTES_MAX < EVENT_BYTES_MAX);
// A version fits the stores' signed 64-bit integers.
const _: () = assert!(VERSION_MAX <= i64::MAX as u64);
